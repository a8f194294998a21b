//! Every recipe shipped in `recipes/` parses and validates (unknown keys, wrong types and bad
//! values would be errors naming the key). Pipeline files for `laconic run` (a top-level
//! `model = "PATH"` string where a recipe has a `[model]` table) live there too; the CLI's
//! tests check them with a dry run.

use std::path::Path;

use laconic_train::Recipe;
use laconic_train::recipe::Method;

#[test]
fn shipped_recipes_parse_and_validate() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut seen = Vec::new();
    let mut pipelines = 0;
    for entry in std::fs::read_dir(&dir).expect("recipes/") {
        let path = entry.expect("entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("toml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read");
        let table: toml::Table = toml::from_str(&text).expect("TOML");
        if table.get("model").is_some_and(toml::Value::is_str) {
            pipelines += 1;
            continue;
        }
        let r = Recipe::parse(&text, &path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        seen.push((r.name.clone(), r.method));
        assert_eq!(
            path.file_stem().and_then(|s| s.to_str()),
            Some(r.name.as_str()),
            "a recipe's name is its file name"
        );
    }
    assert!(seen.len() >= 5, "{seen:?}");
    assert!(pipelines >= 4, "the pipeline files were not told apart");
    assert!(seen.iter().any(|(_, m)| *m == Method::Grpo));
}
