//! Interned dimension values (channel, campaign, producer, owner, currency): small integers.

use fxhash::FxHashMap as HashMap;

/// An interned string; [`NONE`] stands for "no value".
pub type Sym = u32;
pub const NONE: Sym = 0;

/// Append-only string table. Symbol 0 is the empty "no value".
#[derive(Debug, Clone)]
pub struct Dict {
    names: Vec<Box<str>>,
    ids: HashMap<Box<str>, Sym>,
}

impl Default for Dict {
    fn default() -> Dict {
        Dict {
            names: vec!["".into()],
            ids: HashMap::default(),
        }
    }
}

impl Dict {
    /// The symbol of `name`, if it was interned.
    pub fn get(&self, name: &str) -> Option<Sym> {
        self.ids.get(name).copied()
    }

    /// The symbol of `name`, interning it if new.
    pub fn intern(&mut self, name: &str) -> Sym {
        if let Some(sym) = self.ids.get(name) {
            return *sym;
        }
        let sym = Sym::try_from(self.names.len()).expect("more than 2^32 distinct dimension values");
        self.names.push(name.into());
        self.ids.insert(name.into(), sym);
        sym
    }

    pub fn intern_opt(&mut self, name: Option<&str>) -> Sym {
        name.map_or(NONE, |n| self.intern(n))
    }

    /// The name of `sym` (empty for [`NONE`]).
    pub fn name(&self, sym: Sym) -> &str {
        &self.names[sym as usize]
    }

    pub fn name_opt(&self, sym: Sym) -> Option<&str> {
        (sym != NONE).then(|| self.name(sym))
    }

    /// The name, or `(none)` for [`NONE`]: the label of a missing value in a breakdown.
    pub fn label(&self, sym: Sym) -> &str {
        if sym == NONE {
            funnel_core::report::NONE_KEY
        } else {
            self.name(sym)
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.len() <= 1
    }
}
