//! Typed ids for what a layout numbers (feeds, shared variables, constants,
//! buffers, steps), and a dense vector keyed by one.

use std::fmt;
use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

macro_rules! id {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub u32);

        impl $name {
            /// Its position in the dense vector of its kind.
            pub fn index(self) -> usize {
                self.0 as usize
            }
        }

        impl From<usize> for $name {
            fn from(i: usize) -> $name {
                $name(u32::try_from(i).expect("fewer than 2^32 ids"))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id!(
    /// A caller's input, in call order.
    FeedId,
    "feed"
);
id!(
    /// A shared variable a plan reads or updates.
    SharedId,
    "shared"
);
id!(
    /// A constant of the program.
    ConstId,
    "const"
);
id!(
    /// A buffer of the memory plan.
    BufferId,
    "buffer"
);
id!(
    /// A step of the program.
    StepId,
    "step"
);

/// A dense vector keyed by an id type.
#[derive(Clone, Debug)]
pub struct IdVec<I, T> {
    items: Vec<T>,
    key: PhantomData<fn(I)>,
}

impl<I, T> Default for IdVec<I, T> {
    fn default() -> Self {
        IdVec { items: Vec::new(), key: PhantomData }
    }
}

impl<I: From<usize> + Copy, T> IdVec<I, T> {
    /// Appends `item`, giving its id.
    pub fn push(&mut self, item: T) -> I {
        self.items.push(item);
        I::from(self.items.len() - 1)
    }

    /// The number of items.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The items in id order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.items.iter()
    }

    /// The items with their ids.
    pub fn iter_ids(&self) -> impl Iterator<Item = (I, &T)> {
        self.items.iter().enumerate().map(|(i, t)| (I::from(i), t))
    }

    /// The first item's id where `f` holds.
    pub fn position(&self, f: impl FnMut(&T) -> bool) -> Option<I> {
        self.items.iter().position(f).map(I::from)
    }
}

impl<I, T> From<Vec<T>> for IdVec<I, T> {
    fn from(items: Vec<T>) -> Self {
        IdVec { items, key: PhantomData }
    }
}

macro_rules! index {
    ($($name:ident),*) => {$(
        impl<T> Index<$name> for IdVec<$name, T> {
            type Output = T;
            fn index(&self, i: $name) -> &T {
                &self.items[i.index()]
            }
        }
        impl<T> IndexMut<$name> for IdVec<$name, T> {
            fn index_mut(&mut self, i: $name) -> &mut T {
                &mut self.items[i.index()]
            }
        }
    )*};
}

index!(FeedId, SharedId, ConstId, BufferId, StepId);
