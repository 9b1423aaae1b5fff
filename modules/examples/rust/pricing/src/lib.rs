//! `pricing`: quotes an order. Each line gets a quantity discount, the
//! order gets tax, and the quote is personalised by calling the Go
//! `greeter` service through the host.
//!
//! Money is integer cents throughout, so totals never drift.

use nuropb::{Context, Error, Service};
use std::collections::HashSet;

/// Quantity discount tiers: (minimum quantity, percent off).
const TIERS: [(u32, u32); 3] = [(100, 15), (50, 10), (10, 5)];
const MAX_ITEMS: usize = 1000;
const MAX_QUANTITY: u32 = 1_000_000;
const MAX_UNIT_PRICE_CENTS: i64 = 100_000_000_00;
const DEFAULT_TAX_RATE: f64 = 0.20;

nuropb::record! {
    /// One line of an order.
    #[derive(Debug, Clone)]
    pub struct Item {
        /// Stock keeping unit, unique within the order.
        pub sku: String,
        /// How many, 1 to 1,000,000.
        pub quantity: u32,
        /// Price of one unit in cents.
        pub unit_price_cents: i64,
    }
}

nuropb::record! {
    /// Params of `quote`.
    #[derive(Debug, Clone)]
    pub struct QuoteParams {
        /// The lines to price (1 to 1,000).
        pub items: Vec<Item>,
        /// Tax rate between 0 and 1 (default 0.20).
        pub tax_rate: Option<f64>,
        /// ISO currency code (default EUR).
        pub currency: Option<String>,
        /// The customer's name; when given, greeter.hello greets them.
        pub customer: Option<String>,
    }
}

nuropb::record! {
    /// One priced line.
    #[derive(Debug, Clone)]
    pub struct Line {
        /// The item's SKU.
        pub sku: String,
        /// Units.
        pub quantity: u32,
        /// Price of one unit in cents.
        pub unit_price_cents: i64,
        /// Percent off for this quantity.
        pub discount_percent: u32,
        /// Line total after the discount, in cents.
        pub total_cents: i64,
    }
}

nuropb::record! {
    /// The result of `quote`.
    #[derive(Debug, Clone)]
    pub struct Quote {
        /// The priced lines, in order.
        pub lines: Vec<Line>,
        /// Sum before discounts, in cents.
        pub gross_cents: i64,
        /// Sum of discounts, in cents.
        pub discount_cents: i64,
        /// Tax on the discounted sum, in cents (rounded half up).
        pub tax_cents: i64,
        /// What the customer pays, in cents.
        pub total_cents: i64,
        /// The currency of every amount.
        pub currency: String,
        /// greeter.hello's answer, when a customer was named and it answered.
        pub greeting: Option<String>,
        /// Problems that did not stop the quote.
        pub warnings: Vec<String>,
    }
}

nuropb::record! {
    /// One discount tier, for `tiers`.
    pub struct Tier {
        /// Minimum quantity.
        pub min_quantity: u32,
        /// Percent off.
        pub percent: u32,
    }
}

/// Percent off for `quantity` units.
fn discount_percent(quantity: u32) -> u32 {
    TIERS.iter().find(|(min, _)| quantity >= *min).map(|(_, pct)| *pct).unwrap_or(0)
}

fn overflow() -> Error {
    Error::bad_request("order total is too large")
}

fn validate(p: &QuoteParams) -> Result<(), Error> {
    if p.items.is_empty() {
        return Err(Error::bad_request("param `items`: at least one item is needed").with_detail("field", "items"));
    }
    if p.items.len() > MAX_ITEMS {
        return Err(Error::bad_request(format!("param `items`: at most {} items per quote", MAX_ITEMS)));
    }
    let mut seen = HashSet::new();
    for (i, it) in p.items.iter().enumerate() {
        let field = |f: &str, why: String| {
            let path = format!("items[{}].{}", i, f);
            Error::bad_request(format!("param `{}`: {}", path, why)).with_detail("field", path)
        };
        if it.sku.trim().is_empty() {
            return Err(field("sku", "must not be empty".into()));
        }
        if !seen.insert(it.sku.as_str()) {
            return Err(field("sku", format!("{:?} is listed twice", it.sku)));
        }
        if it.quantity == 0 || it.quantity > MAX_QUANTITY {
            return Err(field("quantity", format!("must be 1 to {}, got {}", MAX_QUANTITY, it.quantity)));
        }
        if it.unit_price_cents < 0 || it.unit_price_cents > MAX_UNIT_PRICE_CENTS {
            return Err(field("unit_price_cents", format!("must be 0 to {}, got {}", MAX_UNIT_PRICE_CENTS, it.unit_price_cents)));
        }
    }
    if let Some(r) = p.tax_rate {
        if !(0.0..=1.0).contains(&r) {
            return Err(Error::bad_request(format!("param `tax_rate`: must be between 0 and 1, got {}", r)).with_detail("field", "tax_rate"));
        }
    }
    if let Some(c) = &p.currency {
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(Error::bad_request(format!("param `currency`: want a 3-letter code like EUR, got {:?}", c)).with_detail("field", "currency"));
        }
    }
    Ok(())
}

/// Prices `p` without side effects.
pub fn price(p: &QuoteParams) -> Result<Quote, Error> {
    validate(p)?;
    let mut q = Quote {
        lines: Vec::with_capacity(p.items.len()),
        gross_cents: 0,
        discount_cents: 0,
        tax_cents: 0,
        total_cents: 0,
        currency: p.currency.clone().unwrap_or_else(|| "EUR".into()),
        greeting: None,
        warnings: Vec::new(),
    };
    let mut net: i64 = 0;
    for it in &p.items {
        let gross = it.unit_price_cents.checked_mul(it.quantity as i64).ok_or_else(overflow)?;
        let pct = discount_percent(it.quantity);
        // Round the discount down: the customer never pays a fraction more.
        let discount = gross / 100 * pct as i64 + gross % 100 * pct as i64 / 100;
        let total = gross - discount;
        q.gross_cents = q.gross_cents.checked_add(gross).ok_or_else(overflow)?;
        q.discount_cents += discount;
        net = net.checked_add(total).ok_or_else(overflow)?;
        q.lines.push(Line {
            sku: it.sku.clone(),
            quantity: it.quantity,
            unit_price_cents: it.unit_price_cents,
            discount_percent: pct,
            total_cents: total,
        });
    }
    let rate = p.tax_rate.unwrap_or(DEFAULT_TAX_RATE);
    q.tax_cents = (net as f64 * rate + 0.5).floor() as i64;
    q.total_cents = net.checked_add(q.tax_cents).ok_or_else(overflow)?;
    Ok(q)
}

fn quote(ctx: &mut Context, p: QuoteParams) -> Result<Quote, Error> {
    let mut q = price(&p)?;
    if let Some(name) = p.customer.as_deref().filter(|n| !n.is_empty()) {
        // A quote is still useful without its greeting: degrade, do not fail.
        match ctx.call_as::<String>("greeter", "hello", nuropb::Value::map(vec![("name", name.into())])) {
            Ok(g) => q.greeting = Some(g),
            Err(e) => {
                ctx.warn(&format!("greeter.hello failed: {}", e));
                q.warnings.push(format!("no greeting: {}", e));
            }
        }
    }
    ctx.debug(&format!("quoted {} lines, total {} {}", q.lines.len(), q.total_cents, q.currency));
    Ok(q)
}

fn tiers(_ctx: &mut Context, _p: ()) -> Result<Vec<Tier>, Error> {
    Ok(TIERS.iter().map(|&(min_quantity, percent)| Tier { min_quantity, percent }).collect())
}

/// Builds the service; `export_service!` runs it once per instance.
pub fn build() -> Service {
    let mut svc = Service::new("pricing", "1.0.0");
    svc.description("Quotes orders: quantity discounts, tax, and a greeting from greeter")
        .requires_call("greeter");
    svc.method("quote", "Prices the items with quantity discounts and tax", quote);
    svc.method("tiers", "Lists the quantity discount tiers", tiers);
    svc
}

nuropb::export_service!(build);

#[cfg(test)]
mod tests {
    use super::*;

    fn item(sku: &str, quantity: u32, unit_price_cents: i64) -> Item {
        Item { sku: sku.into(), quantity, unit_price_cents }
    }

    #[test]
    fn prices_with_discounts_and_tax() {
        let p = QuoteParams {
            items: vec![item("a", 1, 1000), item("b", 10, 250), item("c", 100, 99)],
            tax_rate: Some(0.1),
            currency: None,
            customer: None,
        };
        let q = price(&p).unwrap();
        assert_eq!(q.lines[1].discount_percent, 5);
        assert_eq!(q.lines[1].total_cents, 2375);
        assert_eq!(q.lines[2].total_cents, 8415);
        assert_eq!(q.gross_cents, 1000 + 2500 + 9900);
        assert_eq!(q.tax_cents, 1179);
        assert_eq!(q.total_cents, 1000 + 2375 + 8415 + 1179);
    }

    #[test]
    fn validates() {
        let mut p = QuoteParams { items: vec![], tax_rate: None, currency: None, customer: None };
        assert!(price(&p).is_err());
        p.items = vec![item("a", 0, 1)];
        assert!(price(&p).unwrap_err().message().contains("items[0].quantity"));
        p.items = vec![item("a", 1, 1), item("a", 2, 1)];
        assert!(price(&p).unwrap_err().message().contains("twice"));
    }
}
