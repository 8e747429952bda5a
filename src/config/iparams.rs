//! `config/iparams.json`: the app's installation parameter declarations, with the values
//! bearerd.yaml (or `check --iparam`) supplies.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

use super::fdk::IPARAMS;
use super::{Diag, scalar_text};

/// The iparam values templates are compiled with (declared defaults, then the supplied values
/// over them), and the names declared `secure`.
pub(super) fn values(
    decl: Option<&Value>,
    supplied: &HashMap<String, String>,
    d: &mut Diag,
) -> (HashMap<String, String>, HashSet<String>) {
    // Installation parameter values: declared defaults, then the supplied values.
    let mut iparams: HashMap<String, String> = HashMap::new();
    let mut secure: HashSet<String> = HashSet::new();
    match decl {
        Some(Value::Object(decls)) => {
            for (k, decl) in decls {
                if let Some(dv) = decl.get("default_value").and_then(scalar_text) {
                    iparams.insert(k.clone(), dv);
                }
                if decl.get("secure").and_then(Value::as_bool) == Some(true) {
                    secure.insert(k.clone());
                }
            }
        }
        Some(_) => d.warn(IPARAMS, "", "is not an object of iparam declarations; ignored"),
        None => {}
    }
    iparams.extend(supplied.iter().map(|(k, v)| (k.clone(), v.clone())));
    (iparams, secure)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_then_supplied_values_and_secure_names() {
        let decl = json!({
            "domain": {"type": "text", "default_value": "example.freshdesk.com"},
            "api_key": {"type": "text", "secure": true},
            "count": {"default_value": 5}
        });
        let supplied = HashMap::from([("domain".to_string(), "acme.freshdesk.com".to_string())]);
        let mut d = Diag::default();
        let (values, secure) = values(Some(&decl), &supplied, &mut d);
        assert_eq!(values["domain"], "acme.freshdesk.com", "supplied over default");
        assert_eq!(values["count"], "5", "a number default as text");
        assert!(!values.contains_key("api_key"));
        assert_eq!(secure, HashSet::from(["api_key".to_string()]));
        assert!(d.errors.is_empty() && d.warnings.is_empty());
    }

    #[test]
    fn a_file_that_is_not_an_object_is_ignored_with_a_warning() {
        let mut d = Diag::default();
        let supplied = HashMap::from([("k".to_string(), "v".to_string())]);
        let (values, _) = values(Some(&json!([1, 2])), &supplied, &mut d);
        assert_eq!(values.len(), 1);
        assert_eq!(d.warnings.len(), 1);
        assert_eq!(d.warnings[0].file, IPARAMS);
    }
}
