//! Symbolic dimensions.
//!
//! A [`Dim`] is a tensor extent that is either a constant, a named symbol
//! (`batch`, `seq`) or a simple expression over them (`seq + 1`, `batch*seq`,
//! `(seq + 1)/2`, `min(seq, 512)`). Dims are kept in one canonical form — a
//! polynomial with integer coefficients over *atoms* (symbols, floor divisions,
//! remainders, minima and maxima) — so two dims that are equal as expressions
//! compare equal with `==` (`1 + s0 == s0 + 1`, `2*(a + b) == 2*a + 2*b`).
//!
//! Dims describe sizes, so symbols are assumed to be non-negative integers;
//! `/` is floor division and `%` the non-negative remainder.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// Values of the symbols of a model, e.g. `{batch: 2, seq: 16}`.
pub type SymbolBindings = BTreeMap<String, i64>;

/// One indivisible factor of a monomial.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Atom {
    Symbol(Arc<str>),
    FloorDiv(Box<Dim>, i64),
    Rem(Box<Dim>, i64),
    Min(Box<Dim>, Box<Dim>),
    Max(Box<Dim>, Box<Dim>),
}

/// A product of atoms, sorted; the empty product is the constant term.
type Monomial = Vec<Atom>;

/// A symbolic dimension in canonical form. See the module docs.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dim {
    /// Sorted by monomial, no zero coefficients, at most one entry per monomial.
    terms: Vec<(Monomial, i64)>,
}

/// A dim could not be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DimError {
    #[error("symbol `{0}` has no value")]
    UnboundSymbol(String),
    #[error("dim `{0}` divides by zero")]
    DivisionByZero(String),
    #[error("dim arithmetic overflows i64 in `{0}`")]
    Overflow(String),
}

/// Text that is not a dim expression.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot parse dim `{text}`: {reason}")]
pub struct DimParseError {
    pub text: String,
    pub reason: String,
}

/// A dim as a tree of operations, for code generation (`Dim` keeps its
/// canonical form private).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DimNode {
    Constant(i64),
    Symbol(String),
    Add(Box<DimNode>, Box<DimNode>),
    Mul(Box<DimNode>, Box<DimNode>),
    /// Floor division by a positive constant.
    FloorDiv(Box<DimNode>, i64),
    /// Non-negative remainder by a positive constant.
    Rem(Box<DimNode>, i64),
    Min(Box<DimNode>, Box<DimNode>),
    Max(Box<DimNode>, Box<DimNode>),
}

impl Dim {
    /// The dim as a sum of products (see [`DimNode`]).
    pub fn to_node(&self) -> DimNode {
        let mut sum: Option<DimNode> = None;
        for (monomial, coefficient) in &self.terms {
            let mut product = DimNode::Constant(*coefficient);
            for atom in monomial {
                let factor = match atom {
                    Atom::Symbol(name) => DimNode::Symbol(name.to_string()),
                    Atom::FloorDiv(inner, divisor) => DimNode::FloorDiv(Box::new(inner.to_node()), *divisor),
                    Atom::Rem(inner, divisor) => DimNode::Rem(Box::new(inner.to_node()), *divisor),
                    Atom::Min(a, b) => DimNode::Min(Box::new(a.to_node()), Box::new(b.to_node())),
                    Atom::Max(a, b) => DimNode::Max(Box::new(a.to_node()), Box::new(b.to_node())),
                };
                product = match product {
                    DimNode::Constant(1) => factor,
                    other => DimNode::Mul(Box::new(other), Box::new(factor)),
                };
            }
            sum = Some(match sum {
                None => product,
                Some(previous) => DimNode::Add(Box::new(previous), Box::new(product)),
            });
        }
        sum.unwrap_or(DimNode::Constant(0))
    }

    /// The constant `value`.
    pub fn constant(value: i64) -> Dim {
        Dim::from_terms(vec![(Vec::new(), value)])
    }

    /// The named symbol `name`.
    pub fn symbol(name: &str) -> Dim {
        Dim::from_terms(vec![(vec![Atom::Symbol(Arc::from(name))], 1)])
    }

    fn atom(atom: Atom) -> Dim {
        Dim::from_terms(vec![(vec![atom], 1)])
    }

    fn from_terms(mut raw: Vec<(Monomial, i64)>) -> Dim {
        for (monomial, _) in raw.iter_mut() {
            monomial.sort();
        }
        raw.sort_by(|a, b| a.0.cmp(&b.0));
        let mut terms: Vec<(Monomial, i64)> = Vec::with_capacity(raw.len());
        for (monomial, coefficient) in raw {
            match terms.last_mut() {
                Some((last, sum)) if *last == monomial => *sum = sum.wrapping_add(coefficient),
                _ => terms.push((monomial, coefficient)),
            }
        }
        terms.retain(|(_, coefficient)| *coefficient != 0);
        Dim { terms }
    }

    /// The value of a dim without symbols.
    pub fn as_constant(&self) -> Option<i64> {
        match self.terms.as_slice() {
            [] => Some(0),
            [(monomial, coefficient)] if monomial.is_empty() => Some(*coefficient),
            _ => None,
        }
    }

    /// `(c, m)` with `self == c·m` and `m` a product of atoms with coefficient
    /// 1 (the constant 1 for a constant dim), when the dim is a single term.
    pub fn as_scaled_monomial(&self) -> Option<(i64, Dim)> {
        match self.terms.as_slice() {
            [] => Some((0, Dim::constant(1))),
            [(monomial, coefficient)] => Some((*coefficient, Dim::from_terms(vec![(monomial.clone(), 1)]))),
            _ => None,
        }
    }

    /// The name of a dim that is exactly one symbol.
    pub fn as_symbol(&self) -> Option<&str> {
        match self.terms.as_slice() {
            [(monomial, 1)] => match monomial.as_slice() {
                [Atom::Symbol(name)] => Some(name),
                _ => None,
            },
            _ => None,
        }
    }

    pub fn is_constant(&self) -> bool {
        self.as_constant().is_some()
    }

    /// Every symbol the dim mentions.
    pub fn symbols(&self) -> Vec<String> {
        let mut names = Vec::new();
        self.collect_symbols(&mut names);
        names.sort();
        names.dedup();
        names
    }

    fn collect_symbols(&self, names: &mut Vec<String>) {
        for (monomial, _) in &self.terms {
            for atom in monomial {
                match atom {
                    Atom::Symbol(name) => names.push(name.to_string()),
                    Atom::FloorDiv(inner, _) | Atom::Rem(inner, _) => inner.collect_symbols(names),
                    Atom::Min(a, b) | Atom::Max(a, b) => {
                        a.collect_symbols(names);
                        b.collect_symbols(names);
                    }
                }
            }
        }
    }

    /// Floor division by a positive constant, simplified when exact.
    pub fn floor_div(&self, divisor: i64) -> Option<Dim> {
        if divisor <= 0 {
            return None;
        }
        if divisor == 1 {
            return Some(self.clone());
        }
        if let Some(value) = self.as_constant() {
            return Some(Dim::constant(value.div_euclid(divisor)));
        }
        if self.terms.iter().all(|(_, c)| c % divisor == 0) {
            return Some(Dim::from_terms(self.terms.iter().map(|(m, c)| (m.clone(), c / divisor)).collect()));
        }
        Some(Dim::atom(Atom::FloorDiv(Box::new(self.clone()), divisor)))
    }

    /// Non-negative remainder by a positive constant.
    pub fn rem(&self, divisor: i64) -> Option<Dim> {
        if divisor <= 0 {
            return None;
        }
        if let Some(value) = self.as_constant() {
            return Some(Dim::constant(value.rem_euclid(divisor)));
        }
        if self.terms.iter().all(|(_, c)| c % divisor == 0) {
            return Some(Dim::constant(0));
        }
        Some(Dim::atom(Atom::Rem(Box::new(self.clone()), divisor)))
    }

    /// `self / divisor` when the division is exact as polynomials
    /// (`batch*seq*384 / (batch*seq*12) == 32`), or a floor division by a
    /// constant divisor; `None` when neither applies.
    pub fn divide(&self, divisor: &Dim) -> Option<Dim> {
        if let Some(constant) = divisor.as_constant() {
            return self.floor_div(constant);
        }
        if self.terms.is_empty() {
            return Some(Dim::constant(0));
        }
        // Try a single-monomial quotient q with q * divisor == self.
        let (lead_monomial, lead_coefficient) = self.terms.last()?;
        let (divisor_monomial, divisor_coefficient) = divisor.terms.last()?;
        if lead_coefficient % divisor_coefficient != 0 {
            return None;
        }
        let quotient_monomial = remove_factors(lead_monomial, divisor_monomial)?;
        let quotient = Dim::from_terms(vec![(quotient_monomial, lead_coefficient / divisor_coefficient)]);
        (&quotient * divisor == *self).then_some(quotient)
    }

    /// The smaller of two dims (simplified when both are constants or equal).
    pub fn minimum(&self, other: &Dim) -> Dim {
        match (self.as_constant(), other.as_constant()) {
            (Some(a), Some(b)) => Dim::constant(a.min(b)),
            _ if self == other => self.clone(),
            _ => {
                let (a, b) = ordered(self, other);
                Dim::atom(Atom::Min(Box::new(a), Box::new(b)))
            }
        }
    }

    /// The larger of two dims (simplified when both are constants or equal).
    pub fn maximum(&self, other: &Dim) -> Dim {
        match (self.as_constant(), other.as_constant()) {
            (Some(a), Some(b)) => Dim::constant(a.max(b)),
            _ if self == other => self.clone(),
            _ => {
                let (a, b) = ordered(self, other);
                Dim::atom(Atom::Max(Box::new(a), Box::new(b)))
            }
        }
    }

    /// The value of the dim under `bindings`.
    pub fn evaluate(&self, bindings: &SymbolBindings) -> Result<i64, DimError> {
        let overflow = || DimError::Overflow(self.to_string());
        let mut total: i64 = 0;
        for (monomial, coefficient) in &self.terms {
            let mut product = *coefficient;
            for atom in monomial {
                let value = atom.evaluate(bindings)?;
                product = product.checked_mul(value).ok_or_else(overflow)?;
            }
            total = total.checked_add(product).ok_or_else(overflow)?;
        }
        Ok(total)
    }

    /// Parses the text form that [`Dim`]'s `Display` writes, and the forms that
    /// ONNX exporters write in `dim_param` (`s0 + 1`, `2*s0`, `s0//2`,
    /// `floor(s0/2)`, `Min(s0, 512)`).
    pub fn parse(text: &str) -> Result<Dim, DimParseError> {
        let mut parser = DimParser { text, position: 0 };
        let dim = parser.expression()?;
        parser.skip_spaces();
        if parser.position != text.len() {
            return Err(parser.error("unexpected trailing text"));
        }
        Ok(dim)
    }
}

fn ordered(a: &Dim, b: &Dim) -> (Dim, Dim) {
    if a <= b {
        (a.clone(), b.clone())
    } else {
        (b.clone(), a.clone())
    }
}

/// `monomial / factors` when every factor occurs in `monomial`.
fn remove_factors(monomial: &Monomial, factors: &Monomial) -> Option<Monomial> {
    let mut rest = monomial.clone();
    for factor in factors {
        let position = rest.iter().position(|atom| atom == factor)?;
        rest.remove(position);
    }
    Some(rest)
}

impl Atom {
    fn evaluate(&self, bindings: &SymbolBindings) -> Result<i64, DimError> {
        Ok(match self {
            Atom::Symbol(name) => {
                *bindings.get(name.as_ref()).ok_or_else(|| DimError::UnboundSymbol(name.to_string()))?
            }
            Atom::FloorDiv(inner, divisor) => inner.evaluate(bindings)?.div_euclid(*divisor),
            Atom::Rem(inner, divisor) => inner.evaluate(bindings)?.rem_euclid(*divisor),
            Atom::Min(a, b) => a.evaluate(bindings)?.min(b.evaluate(bindings)?),
            Atom::Max(a, b) => a.evaluate(bindings)?.max(b.evaluate(bindings)?),
        })
    }
}

impl From<i64> for Dim {
    fn from(value: i64) -> Dim {
        Dim::constant(value)
    }
}

impl std::ops::Add for &Dim {
    type Output = Dim;
    fn add(self, other: &Dim) -> Dim {
        Dim::from_terms(self.terms.iter().chain(other.terms.iter()).cloned().collect())
    }
}

impl std::ops::Sub for &Dim {
    type Output = Dim;
    fn sub(self, other: &Dim) -> Dim {
        let negated = other.terms.iter().map(|(m, c)| (m.clone(), c.wrapping_neg()));
        Dim::from_terms(self.terms.iter().cloned().chain(negated).collect())
    }
}

impl std::ops::Mul for &Dim {
    type Output = Dim;
    fn mul(self, other: &Dim) -> Dim {
        let mut raw = Vec::with_capacity(self.terms.len() * other.terms.len());
        for (ma, ca) in &self.terms {
            for (mb, cb) in &other.terms {
                let mut monomial = ma.clone();
                monomial.extend(mb.iter().cloned());
                raw.push((monomial, ca.wrapping_mul(*cb)));
            }
        }
        Dim::from_terms(raw)
    }
}

impl fmt::Display for Dim {
    /// Non-constant terms in canonical order, then the constant: `batch*seq + 1`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.terms.is_empty() {
            return f.write_str("0");
        }
        let mut ordered: Vec<&(Monomial, i64)> = self.terms.iter().filter(|(m, _)| !m.is_empty()).collect();
        ordered.extend(self.terms.iter().filter(|(m, _)| m.is_empty()));
        for (index, (monomial, coefficient)) in ordered.into_iter().enumerate() {
            let magnitude = coefficient.unsigned_abs();
            if index == 0 {
                if *coefficient < 0 {
                    f.write_str("-")?;
                }
            } else {
                f.write_str(if *coefficient < 0 { " - " } else { " + " })?;
            }
            if monomial.is_empty() {
                write!(f, "{magnitude}")?;
                continue;
            }
            if magnitude != 1 {
                write!(f, "{magnitude}*")?;
            }
            for (position, atom) in monomial.iter().enumerate() {
                if position > 0 {
                    f.write_str("*")?;
                }
                write!(f, "{atom}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Dim({self})")
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Atom::Symbol(name) => f.write_str(name),
            // Parenthesized whole, so a coefficient before it binds to the atom.
            Atom::FloorDiv(inner, divisor) => write!(f, "(({inner})/{divisor})"),
            Atom::Rem(inner, divisor) => write!(f, "(({inner})%{divisor})"),
            Atom::Min(a, b) => write!(f, "min({a}, {b})"),
            Atom::Max(a, b) => write!(f, "max({a}, {b})"),
        }
    }
}

struct DimParser<'a> {
    text: &'a str,
    position: usize,
}

impl DimParser<'_> {
    fn error(&self, reason: &str) -> DimParseError {
        DimParseError { text: self.text.to_string(), reason: format!("{reason} at byte {}", self.position) }
    }

    fn skip_spaces(&mut self) {
        while self.rest().starts_with(' ') {
            self.position += 1;
        }
    }

    fn rest(&self) -> &str {
        &self.text[self.position..]
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_spaces();
        if self.rest().starts_with(token) {
            self.position += token.len();
            true
        } else {
            false
        }
    }

    fn expression(&mut self) -> Result<Dim, DimParseError> {
        let mut value = self.term()?;
        loop {
            if self.eat("+") {
                value = &value + &self.term()?;
            } else if self.eat("-") {
                value = &value - &self.term()?;
            } else {
                return Ok(value);
            }
        }
    }

    fn term(&mut self) -> Result<Dim, DimParseError> {
        let mut value = self.factor()?;
        loop {
            if self.eat("*") {
                value = &value * &self.factor()?;
            } else if self.eat("//") || self.eat("/") {
                let divisor = self.factor()?;
                value =
                    value.divide(&divisor).ok_or_else(|| self.error("division by a symbolic or non-positive dim"))?;
            } else if self.eat("%") {
                let divisor = self.factor()?;
                value = divisor
                    .as_constant()
                    .and_then(|constant| value.rem(constant))
                    .ok_or_else(|| self.error("remainder by a symbolic or non-positive dim"))?;
            } else {
                return Ok(value);
            }
        }
    }

    fn factor(&mut self) -> Result<Dim, DimParseError> {
        self.skip_spaces();
        if self.eat("-") {
            return Ok(&Dim::constant(0) - &self.factor()?);
        }
        if self.eat("(") {
            let inner = self.expression()?;
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return Ok(inner);
        }
        let rest = self.rest();
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            let value = rest[..digits].parse::<i64>().map_err(|_| self.error("integer out of range"))?;
            self.position += digits;
            return Ok(Dim::constant(value));
        }
        let name_length = rest
            .char_indices()
            .take_while(|(i, c)| c.is_ascii_alphabetic() || *c == '_' || (*i > 0 && (c.is_ascii_digit() || *c == '.')))
            .count();
        if name_length == 0 {
            return Err(self.error("expected a number, a symbol or `(`"));
        }
        let name = rest[..name_length].to_string();
        self.position += name_length;
        if self.eat("(") {
            let first = self.expression()?;
            let second = if self.eat(",") { Some(self.expression()?) } else { None };
            if !self.eat(")") {
                return Err(self.error("expected `)`"));
            }
            return match (name.to_ascii_lowercase().as_str(), second) {
                ("floor", None) => Ok(first),
                ("min", Some(second)) => Ok(first.minimum(&second)),
                ("max", Some(second)) => Ok(first.maximum(&second)),
                _ => Err(self.error(&format!("unknown function `{name}`"))),
            };
        }
        Ok(Dim::symbol(&name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dim(text: &str) -> Dim {
        Dim::parse(text).expect(text)
    }

    #[test]
    fn equal_expressions_compare_equal() {
        assert_eq!(dim("s0 + 1"), dim("1 + s0"));
        assert_eq!(dim("2*(a + b)"), dim("2*a + 2*b"));
        assert_eq!(dim("a*b - b*a"), Dim::constant(0));
        assert_eq!(dim("(seq + 1)*2/2"), dim("seq + 1"));
    }

    #[test]
    fn prints_canonical_text_that_parses_back() {
        for text in ["batch*seq + 1", "-seq + 4", "3*batch", "(seq + 1)/2", "min(seq, 512)", "(a)%4", "max(a, b)*c"] {
            let parsed = dim(text);
            assert_eq!(dim(&parsed.to_string()), parsed, "{text} printed as {parsed}");
        }
        assert_eq!(dim("1 + s0").to_string(), "s0 + 1");
        // Found by fuzzing: a coefficient times a floor division.
        let scaled = &Dim::constant(2) * &dim("(a*b)/7");
        assert_eq!(dim(&scaled.to_string()), scaled);
    }

    #[test]
    fn reads_exporter_forms() {
        assert_eq!(dim("s0//2"), dim("floor(s0/2)"));
        assert_eq!(dim("Min(s0, 512)"), Dim::constant(512).minimum(&Dim::symbol("s0")));
    }

    #[test]
    fn divides_exactly_when_it_can() {
        let total = dim("batch*seq*384");
        assert_eq!(total.divide(&dim("batch*seq*12")), Some(Dim::constant(32)));
        assert_eq!(dim("2*s0*b + 2*b").divide(&dim("s0 + 1")), Some(dim("2*b")));
        assert_eq!(dim("s0").divide(&dim("b")), None);
    }

    #[test]
    fn splits_single_terms_into_coefficient_and_monomial() {
        assert_eq!(dim("256*batch*seq").as_scaled_monomial(), Some((256, dim("batch*seq"))));
        assert_eq!(dim("12").as_scaled_monomial(), Some((12, Dim::constant(1))));
        assert_eq!(dim("seq + 1").as_scaled_monomial(), None);
    }

    #[test]
    fn evaluates_under_bindings() {
        let bindings: SymbolBindings = [("batch".to_string(), 3), ("seq".to_string(), 7)].into();
        assert_eq!(dim("batch*seq + 1").evaluate(&bindings), Ok(22));
        assert_eq!(dim("(seq + 1)/3").evaluate(&bindings), Ok(2));
        assert_eq!(dim("min(seq, 5)").evaluate(&bindings), Ok(5));
        assert_eq!(dim("other").evaluate(&bindings), Err(DimError::UnboundSymbol("other".into())));
    }

    #[test]
    fn rejects_garbage() {
        assert!(Dim::parse("s0 +").is_err());
        assert!(Dim::parse("(s0").is_err());
        assert!(Dim::parse("s0 / b").is_err());
    }
}
