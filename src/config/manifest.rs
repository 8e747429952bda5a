//! `manifest.json`: which templates an app declares (platform 3.x `modules.common.requests`,
//! 2.3 `product.<name>.requests`, or `requests` at the top level as 2.3 apps in the wild have
//! it), and the options each declaration carries.

use std::collections::HashSet;

use serde_json::{Map, Value};

use super::fdk::MANIFEST;
use super::{Diag, ptr};

/// Where a template was declared, and the options the declaration carries.
pub(super) struct Decl {
    pub(super) file: &'static str,
    pub(super) pointer: String,
    pub(super) options: Option<Map<String, Value>>,
}

/// The templates the manifest declares, in the order written, each once.
pub(super) fn declared_templates(manifest: &Value, d: &mut Diag) -> Vec<(String, Decl)> {
    let mut out = Vec::new();
    let mut collect = |v: &Value, base: String, d: &mut Diag| match v {
        Value::Object(map) => {
            for (name, entry) in map {
                let pointer = format!("{base}/{}", ptr(name));
                let options = match entry {
                    Value::Object(e) => match e.get("options") {
                        Some(Value::Object(o)) => Some(o.clone()),
                        Some(_) => {
                            d.error(MANIFEST, format!("{pointer}/options"), "must be an object");
                            None
                        }
                        None => None,
                    },
                    _ => {
                        d.error(MANIFEST, &pointer, "a declared request must be an object (`{}`)");
                        None
                    }
                };
                out.push((name.clone(), Decl { file: MANIFEST, pointer, options }));
            }
        }
        _ => d.error(MANIFEST, base, "must be an object of template names"),
    };
    if let Some(r) = manifest.pointer("/modules/common/requests") {
        collect(r, "/modules/common/requests".into(), d);
    }
    if let Some(Value::Object(products)) = manifest.get("product") {
        for (prod, p) in products {
            if let Some(r) = p.get("requests") {
                collect(r, format!("/product/{}/requests", ptr(prod)), d);
            }
        }
    }
    if let Some(r) = manifest.get("requests") {
        // Platform 2.3 apps in the wild put `requests` at the top level (SPEC 1.4: accepted).
        collect(r, "/requests".into(), d);
    }
    let mut seen = HashSet::new();
    out.retain(|(n, _)| seen.insert(n.clone()));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(manifest: Value) -> (Vec<String>, Diag) {
        let mut d = Diag::default();
        let decls = declared_templates(&manifest, &mut d);
        (decls.into_iter().map(|(n, _)| n).collect(), d)
    }

    #[test]
    fn every_shape_declares_templates_once() {
        let (n, d) = names(json!({"modules": {"common": {"requests": {"a": {}, "b": {}}}}}));
        assert_eq!((n, d.errors.len()), (vec!["a".to_string(), "b".to_string()], 0));
        let (n, _) = names(json!({"product": {"freshdesk": {"requests": {"c": {}}}}, "requests": {"c": {}, "d": {}}}));
        assert_eq!(n, vec!["c".to_string(), "d".to_string()], "2.3 product and top level, c once");
    }

    #[test]
    fn options_are_kept_and_bad_entries_named() {
        let mut d = Diag::default();
        let m = json!({"modules": {"common": {"requests": {"a": {"options": {"retryDelay": 10}}, "b": 1, "c": {"options": 2}}}}});
        let decls = declared_templates(&m, &mut d);
        assert_eq!(decls[0].1.options.as_ref().and_then(|o| o.get("retryDelay")), Some(&json!(10)));
        assert_eq!(decls[0].1.pointer, "/modules/common/requests/a");
        let pointers: Vec<&str> = d.errors.iter().map(|e| e.pointer.as_str()).collect();
        assert_eq!(pointers, ["/modules/common/requests/b", "/modules/common/requests/c/options"]);
    }
}
