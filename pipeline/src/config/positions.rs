//! Where each key of a YAML document sits (line, column), so that errors found
//! after deserialization can still point at the text the user wrote.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Line and column, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineCol {
    pub line: usize,
    pub column: usize,
}

enum Frame {
    Map {
        path: Vec<String>,
        key: Option<String>,
    },
    Seq {
        path: Vec<String>,
        index: usize,
    },
}

#[derive(Default)]
struct Collector {
    stack: Vec<Frame>,
    out: HashMap<Vec<String>, LineCol>,
}

impl Collector {
    /// The path of a node that starts now, and records where it is. Returns None
    /// when the node is a map key.
    fn child_path(&mut self, mark: Marker, scalar: Option<&str>) -> Option<Vec<String>> {
        let at = LineCol {
            line: mark.line(),
            column: mark.col() + 1,
        };
        match self.stack.last_mut() {
            None => Some(Vec::new()),
            Some(Frame::Map { path, key }) => match key.take() {
                None => {
                    // A key: remember it and where it is.
                    let k = scalar.unwrap_or("").to_string();
                    let mut p = path.clone();
                    p.push(k.clone());
                    self.out.entry(p).or_insert(at);
                    *key = Some(k);
                    None
                }
                Some(k) => {
                    let mut p = path.clone();
                    p.push(k);
                    Some(p)
                }
            },
            Some(Frame::Seq { path, index }) => {
                let mut p = path.clone();
                p.push(index.to_string());
                *index += 1;
                self.out.entry(p.clone()).or_insert(at);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Collector {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(ref v, ..) => {
                let _ = self.child_path(mark, Some(v));
            }
            Event::Alias(_) => {
                let _ = self.child_path(mark, Some(""));
            }
            Event::MappingStart(..) => {
                let path = self.child_path(mark, None).unwrap_or_default();
                self.stack.push(Frame::Map { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.child_path(mark, None).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

/// Maps key paths (`["receivers", "otlp", "protocols"]`) to where the key is
/// written. Best effort: a document the positional parser cannot read gives an
/// empty map, and the real parser reports the syntax error.
pub fn index(text: &str) -> HashMap<Vec<String>, LineCol> {
    let mut c = Collector::default();
    let mut parser = Parser::new_from_str(text);
    if parser.load(&mut c, false).is_err() {
        return HashMap::new();
    }
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_list_items() {
        let text = "receivers:\n  otlp:\n    protocols:\n      grpc:\nservice:\n  pipelines:\n    traces:\n      receivers: [otlp]\n      exporters:\n        - debug\n";
        let idx = index(text);
        let p = |s: &[&str]| {
            idx.get(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
                .copied()
        };
        assert_eq!(p(&["receivers"]), Some(LineCol { line: 1, column: 1 }));
        assert_eq!(
            p(&["receivers", "otlp", "protocols"]),
            Some(LineCol { line: 3, column: 5 })
        );
        assert_eq!(
            p(&["receivers", "otlp", "protocols", "grpc"]),
            Some(LineCol { line: 4, column: 7 })
        );
        assert_eq!(
            p(&["service", "pipelines", "traces", "receivers", "0"]),
            Some(LineCol {
                line: 8,
                column: 19
            })
        );
        assert_eq!(
            p(&["service", "pipelines", "traces", "exporters", "0"]),
            Some(LineCol {
                line: 10,
                column: 11
            })
        );
    }
}
