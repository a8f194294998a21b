//! `laconic inspect`.

use anyhow::Result;
use clap::Args;
use laconic_infer::config::RopeScaling;
use laconic_infer::loader::Format;

use crate::ModelArgs;

/// Arguments of `laconic inspect`.
#[derive(Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
}

/// Runs `laconic inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let m = super::load_model(&args.model)?;
    let c = m.config();
    let format = match m.info.format {
        Format::Safetensors => "Hugging Face safetensors directory".to_string(),
        Format::Gguf(v) => format!("GGUF v{v}"),
    };
    let rope = match &c.rope.scaling {
        RopeScaling::None => String::new(),
        RopeScaling::Linear { factor } => format!(", linear scaling x{factor}"),
        RopeScaling::Llama3 { factor, .. } => format!(", llama3 scaling x{factor}"),
        RopeScaling::Factors(_) => ", per-frequency factors (rope_freqs)".to_string(),
    };
    let types: Vec<String> = m
        .info
        .tensor_types
        .iter()
        .map(|(t, n)| format!("{t} x{n}"))
        .collect();
    let params = c.num_parameters();
    println!("path:              {}", m.info.path.display());
    println!("format:            {format}");
    println!("architecture:      {}", c.family.name());
    println!("parameters:        {params} ({:.1}M)", params as f64 / 1e6);
    println!("layers:            {}", c.num_layers);
    println!("hidden size:       {}", c.hidden_size);
    println!("intermediate size: {}", c.intermediate_size);
    println!("heads:             {}", c.num_heads);
    println!("kv heads:          {}", c.num_kv_heads);
    println!("head dim:          {}", c.head_dim);
    println!(
        "vocabulary:        {} (tokenizer: {})",
        c.vocab_size,
        m.tokenizer.vocab_size()
    );
    println!("context length:    {}", c.max_position_embeddings);
    println!("rope:              theta {}{rope}", c.rope.theta);
    println!("rms norm eps:      {}", c.rms_norm_eps);
    println!("tied embeddings:   {}", c.tie_word_embeddings);
    println!("qkv bias:          {}", c.attention_bias);
    println!("qk norm:           {}", c.qk_norm);
    println!("stored dtype:      {}", c.dtype);
    println!("tensor types:      {}", types.join(", "));
    println!(
        "chat template:     {}",
        if m.info.has_chat_template {
            "yes"
        } else {
            "no"
        }
    );
    println!(
        "bos / eos ids:     {:?} / {:?}",
        c.bos_token_id, c.eos_token_ids
    );
    Ok(())
}
