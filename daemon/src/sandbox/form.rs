//! `application/x-www-form-urlencoded` with Stripe's bracket notation
//! (`metadata[key]=v`, `payment_method_types[]=card_present`,
//! `line_items[0][price_data][currency]=eur`), decoded into JSON for the fake Stripe.

use serde_json::{Map, Value};

/// Decodes a form body; `Err` names what is malformed.
pub fn decode(body: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_string())?;
    let mut root = Value::Object(Map::new());
    for pair in text.split('&').filter(|pair| !pair.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let (key, value) = (percent_decode(key), percent_decode(value));
        let path = key_path(&key).ok_or_else(|| format!("malformed parameter name {key:?}"))?;
        insert(&mut root, &path, Value::String(value)).map_err(|conflict| format!("parameter {key:?} {conflict}"))?;
    }
    Ok(root)
}

/// `a[b][]` → ["a", "b", ""].
fn key_path(key: &str) -> Option<Vec<String>> {
    let (head, mut rest) = match key.find('[') {
        Some(at) => (&key[..at], &key[at..]),
        None => (key, ""),
    };
    if head.is_empty() {
        return None;
    }
    let mut path = vec![head.to_string()];
    while !rest.is_empty() {
        let inner = rest.strip_prefix('[')?;
        let end = inner.find(']')?;
        path.push(inner[..end].to_string());
        rest = &inner[end + 1..];
    }
    Some(path)
}

fn insert(node: &mut Value, path: &[String], value: Value) -> Result<(), &'static str> {
    let Some((segment, rest)) = path.split_first() else {
        *node = value;
        return Ok(());
    };
    let is_index = segment.is_empty() || segment.chars().all(|c| c.is_ascii_digit());
    if is_index {
        if node.is_null() || node.as_object().is_some_and(Map::is_empty) {
            *node = Value::Array(Vec::new());
        }
        let items = node.as_array_mut().ok_or("mixes a list and a hash")?;
        let index = if segment.is_empty() { items.len() } else { segment.parse::<usize>().map_err(|_| "has a bad index")? };
        if index > items.len() {
            return Err("skips an index");
        }
        if index == items.len() {
            items.push(Value::Null);
        }
        insert(&mut items[index], rest, value)
    } else {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        let object = node.as_object_mut().ok_or("mixes a hash and a value")?;
        insert(object.entry(segment.clone()).or_insert(Value::Null), rest, value)
    }
}

/// Percent-decoding with `+` as space.
pub fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        match bytes[index] {
            b'+' => out.push(b' '),
            b'%' if index + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[index + 1..index + 3]).ok().and_then(|hex| u8::from_str_radix(hex, 16).ok()) {
                    Some(byte) => {
                        out.push(byte);
                        index += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        index += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn brackets() {
        let decoded = decode(b"amount=1500&metadata[posbridge_payment]=pay_1&payment_method_types[]=card_present&line_items[0][price_data][currency]=eur&line_items[0][quantity]=1&name=a+b%26c").unwrap();
        assert_eq!(
            decoded,
            json!({"amount": "1500", "metadata": {"posbridge_payment": "pay_1"}, "payment_method_types": ["card_present"],
                   "line_items": [{"price_data": {"currency": "eur"}, "quantity": "1"}], "name": "a b&c"})
        );
        assert!(decode(b"a[0]=x&a[b]=y").is_err());
        assert!(decode(b"[x]=1").is_err());
        assert!(decode(b"a[2]=x").is_err());
    }
}
