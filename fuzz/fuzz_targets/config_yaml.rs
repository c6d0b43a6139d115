//! Any text given as a config file yields a config or a ConfigError, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use weft_pipeline::config::{Document, ServiceConfig, Source};
use weft_pipeline::Registry;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let source = Source::Text { name: "fuzz.yaml".into(), text: text.into() };
    let env = |name: &str| (name == "SET").then(|| "value".to_string());
    if let Ok(doc) = Document::load_with_env(&[source], &[], &env) {
        let mut registry = Registry::new();
        weft_processors::register(&mut registry);
        let _ = ServiceConfig::from_document(&doc, &registry);
        let _ = doc.to_yaml();
    }
});
