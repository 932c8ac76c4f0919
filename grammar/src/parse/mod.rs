//! From text to [`SpecFile`]: the pest parser, then a walk over its pairs that
//! builds the AST (`ast_build.rs`). Syntax errors become a [`Diagnostic`]
//! with a caret, in the language's words (`errors.rs`).

mod ast_build;
mod errors;

use ast_build::{model_decl, peft_block, search_block, train_block};
use errors::{precheck, syntax_error};

use crate::ast::*;
use crate::diagnostic::Diagnostic;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "../peft.pest"]
pub(crate) struct PeftParser;

/// Deepest nesting of sets (`{{{...}}}`) the parser accepts before it reports an
/// error instead of recursing further.
pub(crate) const MAX_NESTING: usize = 32;

/// Parses a whole `.peft` file.
pub fn parse(source: &str) -> Result<SpecFile, Diagnostic> {
    if let Some(d) = precheck(source) {
        return Err(d);
    }
    pest::set_error_detail(true);
    let mut pairs = PeftParser::parse(Rule::file, source).map_err(|e| syntax_error(e, source))?;
    let file = pairs
        .next()
        .ok_or_else(|| Diagnostic::error("empty parse result"))?;
    let mut items = Vec::new();
    for pair in file.into_inner() {
        match pair.as_rule() {
            Rule::model_decl => items.push(Item::Model(model_decl(pair)?)),
            Rule::peft_block => items.push(Item::Peft(peft_block(pair)?)),
            Rule::train_block => items.push(Item::Train(train_block(pair)?)),
            Rule::search_block => items.push(Item::Search(search_block(pair)?)),
            _ => {}
        }
    }
    Ok(SpecFile { items })
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
# comments start with '#'
model "models/all-MiniLM-L6-v2"

peft qv_lora {
    lora(r=8, alpha=16, dropout=0.05) on layers[*].attn.{q, v}
}

peft unipelt {
    lora(r=8, alpha=16)             on    layers[*].attn.{q, v}   gated
    prefix(len=10)                  on    layers[*].attn          gated
    adapter(bottleneck=48, act=relu) after layers[*].mlp          gated
}

peft raw_paths {
    ia3() on "encoder.layer.*.attention.self.{key,value}", "encoder.layer.*.output.dense"
}

train {
    adapter = qv_lora
    task    = classify
    data    = "data/sms.tsv"
    epochs  = 1
    batch   = 16
    seq_len = 64
    lr      = 5e-4
    seed    = 0
}
"#;

    #[test]
    fn parses_the_design_example() {
        let f = parse(EXAMPLE).expect("parses");
        assert_eq!(
            f.model().map(|m| m.path.node.as_str()),
            Some("models/all-MiniLM-L6-v2")
        );
        let blocks: Vec<_> = f.peft_blocks().collect();
        assert_eq!(blocks.len(), 3);
        let uni = blocks[1];
        assert_eq!(uni.name.node, "unipelt");
        assert_eq!(uni.statements.len(), 3);
        assert_eq!(uni.statements[2].placement.node, Placement::After);
        assert_eq!(uni.statements[2].modifiers[0].node, "gated");
        let raw = &blocks[2].statements[0];
        assert_eq!(raw.selectors.len(), 2);
        assert!(
            matches!(&raw.selectors[0], Selector::Raw(s) if s.node == "encoder.layer.*.attention.self.{key,value}")
        );
        let train = f.train_blocks().next().expect("train block");
        assert_eq!(
            train.get("lr").map(|e| &e.value.node),
            Some(&ValueKind::Float(5e-4))
        );
        assert_eq!(
            train.get("task").map(|e| &e.value.node),
            Some(&ValueKind::Ident("classify".into()))
        );
    }

    #[test]
    fn a_model_may_be_quantized_at_load() {
        let src = "model \"m\" quantize nf4\npeft a { lora(r=8) on attn.q }";
        let f = parse(src).expect("parses");
        let q = f
            .model()
            .and_then(|m| m.quantize.as_ref())
            .expect("quantize");
        assert_eq!(
            (q.node.as_str(), &src[q.span.start..q.span.end]),
            ("nf4", "nf4")
        );
        assert!(
            parse("model \"m\"\npeft a { lora(r=8) on attn.q }")
                .expect("parses")
                .model()
                .expect("model")
                .quantize
                .is_none()
        );
        // A keyword is not a quantization's name.
        let d = parse("model \"m\" quantize\npeft a { lora(r=8) on attn.q }").expect_err("fails");
        assert!(d.message.contains("a quantization"), "{}", d.message);
    }

    #[test]
    fn role_paths_keep_ranges_and_alternatives() {
        let f = parse("peft a { lora(r=8) on layers[0..2, 5, -2..].attn.{q, v} }").expect("parses");
        let st = &f.peft_blocks().next().expect("block").statements[0];
        let Selector::Role(path) = &st.selectors[0] else {
            panic!("role expected")
        };
        assert_eq!(path.segments.len(), 3);
        let RoleSegment::Name {
            name,
            range: Some(r),
        } = &path.segments[0]
        else {
            panic!()
        };
        assert_eq!(name.node, "layers");
        let items: Vec<RangeItem> = r.items.iter().map(|i| i.node).collect();
        assert_eq!(
            items,
            vec![
                RangeItem::Span {
                    start: Some(0),
                    end: Some(2)
                },
                RangeItem::Index(5),
                RangeItem::Span {
                    start: Some(-2),
                    end: None
                },
            ]
        );
        let RoleSegment::Alternatives { names, .. } = &path.segments[2] else {
            panic!()
        };
        assert_eq!(
            names.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
            ["q", "v"]
        );
    }

    #[test]
    fn search_values_and_blocks() {
        let src = r#"
peft space {
    lora(r={0, 4, 8}, alpha=16) on attn.{q, v}
    adapter(bottleneck=8..=128 log) after layers[*].mlp
}
search s {
    space = space
    budget params <= 0.5%, memory <= 2GiB
    maximize accuracy
    minimize params
    trials = 40
    sampler = tpe
}"#;
        let f = parse(src).expect("parses");
        let st = &f.peft_blocks().next().expect("block").statements;
        assert!(matches!(&st[0].args[0].value.node, ValueKind::Set(v) if v.len() == 3));
        assert_eq!(
            st[1].args[0].value.node,
            ValueKind::Range(RangeValue {
                lo: 8.0,
                hi: 128.0,
                integer: true,
                inclusive: true,
                log: true,
                step: None
            })
        );
        let s = f.search_blocks().next().expect("search");
        assert_eq!(s.items.len(), 6);
        let SearchItem::Budget(cs) = &s.items[1] else {
            panic!()
        };
        assert_eq!(
            cs[1].value.node,
            ValueKind::Quantity {
                amount: 2.0,
                unit: Unit::GiB
            }
        );
    }

    #[test]
    fn syntax_errors_point_at_the_token() {
        let src = "peft a {\n    lora(r=8) in attn.q\n}\n";
        let d = parse(src).expect_err("fails");
        let text = d.render("a.peft", src);
        assert!(
            text.starts_with("error: syntax error: expected `on`, `after` or `beside`, found `in`"),
            "{text}"
        );
        assert!(text.contains("a.peft:2:15"), "{text}");
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let src = format!(
            "peft a {{ lora(r={}1{}) on attn.q }}",
            "{".repeat(5000),
            "}".repeat(5000)
        );
        assert!(parse(&src).is_err());
    }
}

#[cfg(test)]
mod explore {
    #[test]
    #[ignore]
    fn print_errors() {
        for src in [
            "peft a {\n    lora(r=8) in attn.q\n}\n",
            "peft a { lora(r=8 on attn.q }",
            "peft a { lora(r=8) on }",
            "peft a { lora(r=8) on attn.q",
            "peft { }",
            "modle \"x\"",
            "model x",
            "peft a { lora(r=) on attn.q }",
            "peft a { lora(r=8) on layers[].attn }",
            "peft a { lora(r=8) on layers[*.attn }",
            "train { batch 16 }",
            "search s { budget params 5 }",
            "peft a { lora(r=8) on \"abc }",
            "peft a { lora(r=8) on attn.q, }",
            "peft a { lora r=8 on attn.q }",
        ] {
            match super::parse(src) {
                Ok(_) => println!("OK: {src}"),
                Err(d) => println!("{}", d.render("x.peft", src)),
            }
        }
    }
}
