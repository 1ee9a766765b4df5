//! The XML 1.0 well-formedness rules quick-xml leaves to its caller: which characters may
//! appear, what a name is, what a reference may name, where the declaration may stand.
//! libvirt (libxml2) refuses a document that breaks any of them, so vbridge refuses it too,
//! before it prints or defines anything. Each check answers with the byte offset (within the
//! slice it was given) of the first offence and what it is.

/// The offset of an offence within the checked slice, and what it is.
pub(super) type Offence = (usize, String);

/// XML 1.0 `Char`: tab, line feed, carriage return, and everything from U+0020 on except
/// the two non-characters U+FFFE and U+FFFF (surrogates cannot be in a `str`).
fn is_xml_char(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}')
        || c >= '\u{10000}'
}

/// The first character of the document that XML 1.0 does not allow anywhere.
pub(super) fn check_chars(doc: &str) -> Result<(), Offence> {
    for (i, c) in doc.char_indices() {
        if !is_xml_char(c) {
            return Err((
                i,
                format!("character U+{:04X} is not allowed in XML", c as u32),
            ));
        }
    }
    Ok(())
}

fn is_name_start(c: char) -> bool {
    matches!(c,
        ':' | 'A'..='Z' | '_' | 'a'..='z'
        | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{F6}' | '\u{F8}'..='\u{2FF}'
        | '\u{370}'..='\u{37D}' | '\u{37F}'..='\u{1FFF}' | '\u{200C}'..='\u{200D}'
        | '\u{2070}'..='\u{218F}' | '\u{2C00}'..='\u{2FEF}' | '\u{3001}'..='\u{D7FF}'
        | '\u{F900}'..='\u{FDCF}' | '\u{FDF0}'..='\u{FFFD}' | '\u{10000}'..='\u{EFFFF}')
}

fn is_name_char(c: char) -> bool {
    is_name_start(c)
        || matches!(c, '-' | '.' | '0'..='9' | '\u{B7}' | '\u{300}'..='\u{36F}' | '\u{203F}'..='\u{2040}')
}

/// XML 1.0 `Name`.
pub(super) fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(is_name_start) && chars.all(is_name_char)
}

/// The length of the `Name` at the start of `s` (0 when there is none).
fn name_len(s: &str) -> usize {
    let mut end = 0;
    for (i, c) in s.char_indices() {
        let ok = if i == 0 {
            is_name_start(c)
        } else {
            is_name_char(c)
        };
        if !ok {
            break;
        }
        end = i + c.len_utf8();
    }
    end
}

/// XML's white space (not Unicode's).
pub(super) fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

/// The entities every document knows.
const PREDEFINED: [&str; 5] = ["amp", "lt", "gt", "apos", "quot"];

/// A general entity an internal DTD subset declares: its replacement text, or None for an
/// external (or unparsed) one, whose text libvirt's parser never loads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Entity {
    pub name: String,
    pub value: Option<String>,
}

/// Every `&` in character data or an attribute value starts a reference to a declared
/// entity or a character reference to an allowed character, ended by `;`. Returns where
/// each reference to a declared entity is and which entity it names.
pub(super) fn check_refs<'e>(
    text: &str,
    declared: &'e [Entity],
) -> Result<Vec<(usize, &'e Entity)>, Offence> {
    refs(text, Some(declared))
}

/// [`check_refs`]; with `declared` None, any entity name passes (an entity value may name
/// one declared after it: it is checked where it is used).
fn refs<'e>(
    text: &str,
    declared: Option<&'e [Entity]>,
) -> Result<Vec<(usize, &'e Entity)>, Offence> {
    let mut used = Vec::new();
    let mut from = 0;
    while let Some(p) = text[from..].find('&').map(|p| p + from) {
        let rest = &text[p + 1..];
        let Some(semi) = rest.find(';') else {
            return Err((
                p,
                "'&' starts no reference (no ';' follows; write &amp;)".into(),
            ));
        };
        let body = &rest[..semi];
        if let Some(num) = body.strip_prefix('#') {
            let value = match num.strip_prefix('x') {
                Some(hex) if !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    u32::from_str_radix(hex, 16).ok()
                }
                None if !num.is_empty() && num.bytes().all(|b| b.is_ascii_digit()) => {
                    num.parse().ok()
                }
                _ => {
                    return Err((p, format!("malformed character reference &{body};")));
                }
            };
            if !value.and_then(char::from_u32).is_some_and(is_xml_char) {
                return Err((
                    p,
                    format!("character reference &{body}; names a character XML does not allow"),
                ));
            }
        } else if name_len(body) != body.len() || body.is_empty() {
            return Err((p, "'&' starts no reference (write &amp;)".into()));
        } else if let Some(e) = declared.and_then(|d| d.iter().find(|e| e.name == body)) {
            used.push((p, e));
        } else if !PREDEFINED.contains(&body) && declared.is_some() {
            return Err((p, format!("entity &{body}; is not defined")));
        }
        from = p + 1 + semi + 1;
    }
    Ok(used)
}

/// An entity value with its character references replaced, as the parser stores it.
fn expand_char_refs(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(p) = rest.find("&#") {
        out.push_str(&rest[..p]);
        let after = &rest[p + 2..];
        let end = after.find(';').unwrap_or(after.len());
        let num = &after[..end];
        let c = match num.strip_prefix('x') {
            Some(hex) => u32::from_str_radix(hex, 16).ok(),
            None => num.parse().ok(),
        }
        .and_then(char::from_u32);
        match c {
            Some(c) => out.push(c),
            None => out.push_str(&rest[p..p + 2 + end + 1]),
        }
        rest = &after[(end + 1).min(after.len())..];
    }
    out.push_str(rest);
    out
}

/// Character data may not hold `]]>` (it ends only a CDATA section).
pub(super) fn check_char_data<'e>(
    text: &str,
    declared: &'e [Entity],
) -> Result<Vec<(usize, &'e Entity)>, Offence> {
    if let Some(p) = text.find("]]>") {
        return Err((p, "']]>' is not allowed in text".into()));
    }
    check_refs(text, declared)
}

/// `</name S? >`.
pub(super) fn check_end_tag(raw: &str) -> Result<(), Offence> {
    let inner = &raw[2..raw.len() - 1];
    let n = name_len(inner);
    if n == 0 || !inner.as_bytes()[n..].iter().all(|&b| is_space(b)) {
        return Err((0, format!("malformed end tag {raw:?}")));
    }
    Ok(())
}

/// `<!-- ... -->`: no `--` inside and no `-` just before the end.
pub(super) fn check_comment(raw: &str) -> Result<(), Offence> {
    let body = &raw[4..raw.len() - 3];
    if let Some(p) = body.find("--") {
        return Err((4 + p, "'--' inside a comment".into()));
    }
    if body.ends_with('-') {
        return Err((raw.len() - 4, "a comment ending in '--->'".into()));
    }
    Ok(())
}

/// `<?target ...?>`: a name, not `xml` in any case (that is the declaration's alone).
pub(super) fn check_pi(raw: &str) -> Result<(), Offence> {
    let inner = &raw[2..raw.len() - 2];
    let n = name_len(inner);
    let target = &inner[..n];
    if n == 0 || !(inner.len() == n || is_space(inner.as_bytes()[n])) {
        return Err((
            2,
            "a processing instruction without a valid target name".into(),
        ));
    }
    if target.eq_ignore_ascii_case("xml") {
        return Err((
            0,
            "the XML declaration is allowed only at the start of the document".into(),
        ));
    }
    Ok(())
}

/// `<?xml version='1.x' (encoding='...')? (standalone='yes|no')? ?>`, in that order.
pub(super) fn check_decl(raw: &str) -> Result<(), Offence> {
    let inner = &raw[5..raw.len() - 2];
    let mut pairs = Vec::new();
    let b = inner.as_bytes();
    let mut i = 0;
    loop {
        let ws = i;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if i >= b.len() {
            break;
        }
        if i == ws {
            return Err((5 + i, "the XML declaration needs a space here".into()));
        }
        let n = name_len(&inner[i..]);
        let name = &inner[i..i + n];
        i += n;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        if n == 0 || i >= b.len() || b[i] != b'=' {
            return Err((5 + i, "malformed XML declaration".into()));
        }
        i += 1;
        while i < b.len() && is_space(b[i]) {
            i += 1;
        }
        let q = b.get(i).copied();
        if !matches!(q, Some(b'\'' | b'"')) {
            return Err((
                5 + i,
                "malformed XML declaration: a value is not quoted".into(),
            ));
        }
        let Some(len) = inner[i + 1..].find(q.unwrap() as char) else {
            return Err((
                5 + i,
                "malformed XML declaration: a value is not closed".into(),
            ));
        };
        pairs.push((name, &inner[i + 1..i + 1 + len], 5 + i));
        i += len + 2;
    }
    let mut expect = ["version", "encoding", "standalone"].iter().peekable();
    for (k, (name, value, at)) in pairs.iter().enumerate() {
        if k == 0 && *name != "version" {
            return Err((*at, "the XML declaration must start with version".into()));
        }
        while expect.peek().is_some_and(|e| *e != name) {
            expect.next();
        }
        if expect.next().is_none() {
            return Err((
                *at,
                format!("{name:?} is out of place in the XML declaration"),
            ));
        }
        let ok = match *name {
            "version" => value
                .strip_prefix("1.")
                .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())),
            "encoding" => {
                value
                    .bytes()
                    .next()
                    .is_some_and(|b| b.is_ascii_alphabetic())
                    && value
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
            }
            _ => matches!(*value, "yes" | "no"),
        };
        if !ok {
            return Err((
                *at,
                format!("{name}={value:?} is not allowed in the XML declaration"),
            ));
        }
    }
    if pairs.is_empty() {
        return Err((0, "the XML declaration must give a version".into()));
    }
    Ok(())
}

/// A cursor over a DOCTYPE declaration, for [`check_doctype`].
struct Dtd<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Dtd<'a> {
    fn err<T>(&self, why: &str) -> Result<T, Offence> {
        Err((self.i, format!("malformed DOCTYPE: {why}")))
    }

    fn rest(&self) -> &'a str {
        &self.s[self.i..]
    }

    /// Skip white space; whether there was any.
    fn space(&mut self) -> bool {
        let n = self.rest().len()
            - self
                .rest()
                .trim_start_matches([' ', '\t', '\n', '\r'])
                .len();
        self.i += n;
        n > 0
    }

    fn need_space(&mut self) -> Result<(), Offence> {
        if self.space() {
            Ok(())
        } else {
            self.err("white space expected")
        }
    }

    fn eat(&mut self, lit: &str) -> bool {
        let ok = self.rest().starts_with(lit);
        if ok {
            self.i += lit.len();
        }
        ok
    }

    fn name(&mut self) -> Result<&'a str, Offence> {
        let n = name_len(self.rest());
        if n == 0 {
            return self.err("a name expected");
        }
        let name = &self.rest()[..n];
        self.i += n;
        Ok(name)
    }

    /// A quoted literal; returns its content.
    fn literal(&mut self) -> Result<&'a str, Offence> {
        let q = match self.rest().as_bytes().first() {
            Some(&q @ (b'\'' | b'"')) => q as char,
            _ => return self.err("a quoted value expected"),
        };
        let Some(len) = self.rest()[1..].find(q) else {
            return self.err("a quoted value is not closed");
        };
        let v = &self.rest()[1..1 + len];
        self.i += len + 2;
        Ok(v)
    }

    /// `SYSTEM "uri"` or `PUBLIC "id" "uri"` (the URI optional when `public_only`).
    fn external_id(&mut self, public_only: bool) -> Result<bool, Offence> {
        if self.eat("SYSTEM") {
            self.need_space()?;
            self.literal()?;
        } else if self.eat("PUBLIC") {
            self.need_space()?;
            self.literal()?;
            let back = self.i;
            if self.space() && matches!(self.rest().as_bytes().first(), Some(b'\'' | b'"')) {
                self.literal()?;
            } else if public_only {
                self.i = back;
            } else {
                return self.err("PUBLIC needs a system literal");
            }
        } else {
            return Ok(false);
        }
        Ok(true)
    }

    /// The body of `<!ELEMENT` or `<!ATTLIST` up to its `>`, quoted values skipped.
    fn skip_to_close(&mut self) -> Result<(), Offence> {
        loop {
            match self.rest().as_bytes().first() {
                None => return self.err("a declaration is not closed"),
                Some(b'>') => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b'\'' | b'"') => {
                    let at = self.i + 1;
                    if let Some(p) = self.literal()?.find('<') {
                        // An attribute's default value is an attribute value: no '<'.
                        return Err((at + p, "malformed DOCTYPE: '<' in a quoted value".into()));
                    }
                }
                Some(b'<') => return self.err("'<' inside a declaration"),
                Some(_) => {
                    let c = self.rest().chars().next().unwrap();
                    self.i += c.len_utf8();
                }
            }
        }
    }

    /// `<!ENTITY` S ('%' S)? Name S (EntityValue | ExternalID NDataDecl?) S? `>`; returns the
    /// name of a general entity.
    fn entity(&mut self) -> Result<Option<Entity>, Offence> {
        self.need_space()?;
        let parameter = self.eat("%");
        if parameter {
            self.need_space()?;
        }
        let name = self.name()?;
        self.need_space()?;
        let mut text = None;
        if !self.external_id(false)? {
            let at = self.i + 1;
            let value = self.literal()?;
            if let Some(p) = value.find('%') {
                // Parameter-entity references in an internal subset's values are not allowed.
                return Err((at + p, "malformed DOCTYPE: '%' in an entity value".into()));
            }
            refs(value, None).map_err(|(p, why)| (at + p, why))?;
            text = Some(expand_char_refs(value));
        } else if !parameter {
            let back = self.i;
            if self.space() && self.eat("NDATA") {
                self.need_space()?;
                self.name()?;
            } else {
                self.i = back;
            }
        }
        self.space();
        if !self.eat(">") {
            return self.err("'>' expected after an entity declaration");
        }
        Ok((!parameter).then(|| Entity {
            name: name.to_string(),
            value: text,
        }))
    }
}

/// Check a `<!DOCTYPE ...>` declaration, its internal subset included, and return the
/// general entities it declares (references to them are then not refused).
pub(super) fn check_doctype(raw: &str) -> Result<Vec<Entity>, Offence> {
    let mut d = Dtd { s: raw, i: 0 };
    let mut out: Vec<Entity> = Vec::new();
    if !d.eat("<!DOCTYPE") {
        return d.err("'<!DOCTYPE' expected");
    }
    d.need_space()?;
    d.name()?;
    let had_space = d.space();
    if had_space && d.external_id(false)? {
        d.space();
    }
    if d.eat("[") {
        loop {
            d.space();
            if d.eat("]") {
                break;
            }
            if d.eat("<!--") {
                let Some(end) = d.rest().find("-->") else {
                    return d.err("a comment is not closed");
                };
                let body = &d.rest()[..end];
                if let Some(p) = body.find("--").or(body.ends_with('-').then(|| end - 1)) {
                    return Err((d.i + p, "malformed DOCTYPE: '--' inside a comment".into()));
                }
                d.i += end + 3;
            } else if d.rest().starts_with("<?") {
                let Some(end) = d.rest().find("?>") else {
                    return d.err("a processing instruction is not closed");
                };
                let at = d.i;
                check_pi(&d.rest()[..end + 2]).map_err(|(p, why)| (at + p, why))?;
                d.i += end + 2;
            } else if d.eat("<!ENTITY") {
                if let Some(e) = d.entity()? {
                    // The first declaration of a name binds.
                    if !out.iter().any(|o| o.name == e.name) {
                        out.push(e);
                    }
                }
            } else if d.eat("<!ELEMENT") || d.eat("<!ATTLIST") {
                d.need_space()?;
                d.name()?;
                d.skip_to_close()?;
            } else if d.eat("<!NOTATION") {
                d.need_space()?;
                d.name()?;
                d.need_space()?;
                if !d.external_id(true)? {
                    return d.err("a notation needs SYSTEM or PUBLIC");
                }
                d.space();
                if !d.eat(">") {
                    return d.err("'>' expected after a notation");
                }
            } else if d.eat("%") {
                d.name()?;
                if !d.eat(";") {
                    return d.err("';' expected after a parameter entity reference");
                }
            } else {
                return d.err("not a declaration");
            }
        }
        d.space();
    }
    if d.rest() != ">" {
        return d.err("'>' expected at the end");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn characters() {
        assert!(check_chars("a\tb\r\nc\u{10000}").is_ok());
        assert_eq!(check_chars("ab\u{1}").unwrap_err().0, 2);
        assert!(check_chars("\u{FFFE}").is_err());
        assert!(check_chars("\u{FFFF}").is_err());
        assert!(
            check_chars("\u{7F}\u{85}").is_ok(),
            "XML 1.0 allows C1 controls"
        );
    }

    #[test]
    fn names() {
        for yes in [
            "a",
            "qemu:commandline",
            "_x",
            ":a",
            "x\u{B7}",
            "a-b.c1",
            "é",
        ] {
            assert!(is_name(yes), "{yes}");
        }
        for no in [
            "",
            "1x",
            "<model",
            "-a",
            "\u{B7}x",
            "a b",
            "x\u{D7}",
            "ty\u{1}pe",
        ] {
            assert!(!is_name(no), "{no:?}");
        }
    }

    #[test]
    fn references() {
        let none: &[Entity] = &[];
        assert!(check_refs("&amp;&lt;&gt;&apos;&quot;&#65;&#x41;&#x10FFFF;", none).is_ok());
        for (bad, needle) in [
            ("a&bogus;", "not defined"),
            ("&#0;", "does not allow"),
            ("&#xD800;", "does not allow"),
            ("&#xFFFE;", "does not allow"),
            ("&#x110000;", "does not allow"),
            ("&#99999999999;", "does not allow"),
            ("&#;", "malformed"),
            ("&#x;", "malformed"),
            ("&#X41;", "malformed"),
            ("& amp;", "no reference"),
            ("&amp", "no ';'"),
            ("a&b", "no ';'"),
        ] {
            let (at, why) = check_refs(bad, none).unwrap_err();
            assert!(why.contains(needle), "{bad}: {why}");
            assert_eq!(at, bad.find('&').unwrap(), "{bad}");
        }
        let br = [Entity {
            name: "br".into(),
            value: Some("br0".into()),
        }];
        assert_eq!(check_refs("a&br;", &br).unwrap(), vec![(1, &br[0])]);
        assert_eq!(expand_char_refs("&#60;b&#x3E;&bad"), "<b>&bad");
        assert_eq!(check_char_data("a]]>", none).unwrap_err().0, 1);
        assert!(check_char_data("a]] >", none).is_ok());
    }

    /// Offences are placed where they are: the column a person is sent to.
    #[test]
    fn offsets_point_at_the_offence() {
        let none: &[Entity] = &[];
        assert_eq!(
            check_refs("ok &amp; &#65; x&bogus;", none).unwrap_err().0,
            16
        );
        assert_eq!(check_refs("&lt;&#0;", none).unwrap_err().0, 4);
        assert_eq!(check_char_data("&amp;ab]]>", none).unwrap_err().0, 7);
        assert_eq!(expand_char_refs("a&#65;b&#x42;c&#;d"), "aAbBc&#;d");
        assert_eq!(check_comment("<!-- a -- b -->").unwrap_err().0, 7);
        assert_eq!(check_comment("<!-- x --->").unwrap_err().0, 7);
        assert_eq!(check_pi("<?1x?>").unwrap_err().0, 2);
        for (decl, at) in [
            ("<?xml version='1.0'encoding='x'?>", 19),
            ("<?xml version='1.0' encoding=x?>", 29),
            ("<?xml version='1.0' encoding='x?>", 29),
            ("<?xml version='1.0' foo='x'?>", 24),
            ("<?xml version='1.0' standalone='maybe'?>", 31),
            ("<?xml version  =  '1.0' encoding='-x'?>", 33),
            ("<?xml encoding='x' version='1.0'?>", 15),
            ("<?xml version='1.0' =?>", 20),
        ] {
            assert_eq!(check_decl(decl).unwrap_err().0, at, "{decl}");
        }
        for (dtd, at) in [
            ("<!DOCTYPE d [<!ENTITY a 'x%p;'>]>", 26),
            ("<!DOCTYPE d [<!ENTITY a 'x& y;'>]>", 26),
            ("<!DOCTYPE d [<!ENTITY  %  p 'x' junk>]>", 32),
            ("<!DOCTYPE d [<!ENTITY a SYSTEM 'x' NDATA>]>", 40),
            ("<!DOCTYPE d [<!ATTLIST d a CDATA 'a<b'>]>", 35),
            ("<!DOCTYPE d [<?pi x?><?xml x?>]>", 21),
            ("<!DOCTYPE d [<!-- a--b -->]>", 19),
            ("<!DOCTYPE d [<!-- ab --->]>", 21),
            ("<!DOCTYPE d [%p]>", 15),
        ] {
            assert_eq!(check_doctype(dtd).unwrap_err().0, at, "{dtd}");
        }
        // The declarations between stay readable: a PUBLIC id with and without a URI.
        assert!(check_doctype("<!DOCTYPE d [<!NOTATION n PUBLIC 'p' 'u'>]>").is_ok());
        assert!(check_doctype("<!DOCTYPE d PUBLIC 'p'>").is_err());
        assert!(check_doctype("<!DOCTYPE d [<!ENTITY e PUBLIC 'p' 'u'>]>").is_ok());
    }

    #[test]
    fn tags_comments_pis() {
        assert!(check_end_tag("</a>").is_ok());
        assert!(check_end_tag("</a \t\n>").is_ok());
        assert!(check_end_tag("</ a>").is_err());
        assert!(check_end_tag("</a/>").is_err());
        assert!(check_comment("<!-- ok - -->").is_ok());
        assert!(check_comment("<!-- a--b -->").is_err());
        assert!(check_comment("<!-- x --->").is_err());
        assert!(check_pi("<?xml-stylesheet x?>").is_ok());
        assert!(check_pi("<?pi?>").is_ok());
        assert!(check_pi("<?XmL x?>").is_err());
        assert!(check_pi("<? x?>").is_err());
    }

    #[test]
    fn declarations() {
        for ok in [
            "<?xml version='1.0'?>",
            "<?xml version=\"1.1\" encoding='UTF-8' standalone='no' ?>",
            "<?xml version = '1.0' standalone='yes'?>",
        ] {
            assert!(check_decl(ok).is_ok(), "{ok}");
        }
        for bad in [
            "<?xml?>",
            "<?xml encoding='utf-8'?>",
            "<?xml version='2.0'?>",
            "<?xml version='1.0' standalone='maybe'?>",
            "<?xml version='1.0'encoding='utf-8'?>",
            "<?xml version='1.0' standalone='yes' encoding='utf-8'?>",
            "<?xml version='1.0' version='1.0'?>",
            "<?xml version=1.0?>",
            "<?xml version='1.0' foo='x'?>",
            "<?xml version='1.x'?>",
            "<?xml version='1.'?>",
            "<?xml version ?>",
            "<?xml version= ?>",
        ] {
            assert!(check_decl(bad).is_err(), "{bad}");
        }
        let e = check_decl("<?xml version 1.0?>").unwrap_err();
        assert_eq!(e, (14, "malformed XML declaration".to_string()));
    }

    #[test]
    fn doctypes() {
        let d = "<!DOCTYPE domain [\n<!ENTITY br 'br0'>\n<!ENTITY % p 'x'>\n<!ENTITY\tn2 SYSTEM 'f'>\n%p;\n<!ENTITY both '&br;&#65;'>\n<!-- c --><?pi x?>\n<!ELEMENT domain ANY>\n<!ATTLIST domain type CDATA 'a>b'>\n<!NOTATION n PUBLIC 'x'>\n<!ENTITY u SYSTEM 'u' NDATA n>\n]>";
        let names: Vec<String> = check_doctype(d)
            .unwrap()
            .into_iter()
            .map(|e| e.name)
            .collect();
        assert_eq!(names, vec!["br", "n2", "both", "u"]);
        for ok in [
            "<!DOCTYPE domain>",
            "<!DOCTYPE domain SYSTEM 'x.dtd'>",
            "<!DOCTYPE domain PUBLIC 'id' \"x.dtd\" [ ] >",
            "<!DOCTYPE domain []>",
        ] {
            assert!(check_doctype(ok).is_ok(), "{ok}");
        }
        for bad in [
            "<!DOCTYPE>",
            "<!DOCTYPE domain [\n  <!ENTITY lan!DOCTYPE domain [\n  <!ENTITY lan \"default\">\n]>",
            "<!DOCTYPE domain [<!ENTITY a 'x'>",
            "<!DOCTYPE domain [<!ENTITY a 'x>]>",
            "<!DOCTYPE domain [<!ENTITY a '& nope;'>]>",
            "<!DOCTYPE domain [<!ENTITY a '%p;'>]>",
            "<!DOCTYPE domain [<!ENTITYa 'x'>]>",
            "<!DOCTYPE domain [<!-- a--b -->]>",
            "<!DOCTYPE domain [junk]>",
            "<!DOCTYPE domain [<!ELEMENT domain ANY]>",
            "<!DOCTYPE domain PUBLIC 'id'>",
            "<!DOCTYPE domain] >",
            "<!DOCTYPE domain [] x>",
        ] {
            assert!(check_doctype(bad).is_err(), "{bad}");
        }
    }
}
