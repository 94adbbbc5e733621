//! Encrypted unsigned integers of the widths the backend uses (2 to 64 bits), behind one enum,
//! and the blobs they travel in: one `CompressedFheUint*` per filter constant (key holder →
//! node) and one compressed ciphertext list per result (node → key holder).
//!
//! Everything here that touches a server key must run on a thread where one is set (see
//! [`super::keys::ServerKeyGuard`]).

use tfhe::integer::ciphertext::IntegerRadixCiphertext;
use tfhe::integer::{BooleanBlock, RadixCiphertext};
use tfhe::prelude::*;
use tfhe::safe_serialization::{safe_deserialize, safe_deserialize_conformant};
use tfhe::shortint::Ciphertext;
use tfhe::shortint::parameters::PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128;
use tfhe::{
    ClientKey, CompactCiphertextList, CompactCiphertextListBuilder, CompactCiphertextListExpander,
    CompressedCiphertextList, CompressedCiphertextListBuilder, FheBool, FheTypes, FheUint,
    FheUintId, MatchValues, ServerKey, Tag,
};

use super::keys::serialize;
use super::{HeError, MAX_CONSTANT_BYTES, MAX_RESULT_BYTES};
use crate::plan::CmpOp;

macro_rules! widths {
    ($($var:ident $bits:literal $ty:ident $cty:ident $params:ident $kind:ident $clear:ident;)*) => {
        /// An encrypted unsigned integer of one of the supported widths.
        #[derive(Clone)]
        pub enum EncUint {
            $(
                #[doc = concat!("A ", stringify!($bits), "-bit value.")]
                $var(tfhe::$ty),
            )*
        }

        impl EncUint {
            /// Width in bits.
            pub fn bits(&self) -> u32 {
                match self { $(EncUint::$var(_) => $bits,)* }
            }

            /// `value op self` as an encrypted boolean, for a clear `value`.
            pub fn compare_clear(&self, value: u64, op: CmpOp) -> FheBool {
                match self { $(EncUint::$var(c) => compare(c, value, op),)* }
            }

            /// `Σ sel[i] · clears[i]` in a `bits`-wide integer (one TFHE-rs dot product).
            pub fn dot(bits: u32, sel: &[FheBool], clears: &[u64]) -> Result<EncUint, HeError> {
                if sel.is_empty() || sel.len() != clears.len() {
                    return Err(HeError::Tfhe("dot product of mismatched or empty slices".into()));
                }
                match bits {
                    $($bits => Ok(EncUint::$var(tfhe::$ty::dot_product(sel, clears))),)*
                    _ => Err(unsupported_width(bits)),
                }
            }

            /// `Σ sel[i] · clears[i]` when at most one `sel[i]` is true: TFHE-rs's one-hot dot
            /// product, which aggregates without carry propagation (much cheaper).
            pub fn one_hot_dot(
                key: &ServerKey,
                bits: u32,
                sel: &[FheBool],
                clears: &[u64],
            ) -> Result<EncUint, HeError> {
                let first = match sel.first() {
                    Some(f) if sel.len() == clears.len() => f,
                    _ => return Err(HeError::Tfhe("dot product of mismatched or empty slices".into())),
                };
                let tag = first.tag().clone();
                let blocks: Vec<BooleanBlock> = sel
                    .iter()
                    .map(|b| BooleanBlock::new_unchecked(b.clone().into_raw_parts()))
                    .collect();
                let integer_key: &tfhe::integer::ServerKey = key.as_ref();
                match bits {
                    $($bits => {
                        let radix: RadixCiphertext = integer_key
                            .boolean_scalar_one_hot_dot_prod_parallelized(&blocks, clears, bits / 2);
                        Ok(EncUint::$var(tfhe::$ty::from_raw_parts(
                            radix,
                            Default::default(),
                            tag,
                            Default::default(),
                        )))
                    })*
                    _ => Err(unsupported_width(bits)),
                }
            }

            /// The table's value at the encrypted index (TFHE-rs `match_value`): one equality
            /// selector per table entry, shared block comparisons, then a one-hot dot product.
            /// The table must cover every value the index can hold.
            pub fn lookup(&self, table: &MatchValues<u64>, bits: u32) -> Result<EncUint, HeError> {
                match self { $(EncUint::$var(c) => lookup_into(c, table, bits),)* }
            }

            /// `self - other` when `self >= other`, else 0 (same widths).
            pub fn sub_or_zero(&self, other: &EncUint) -> Result<EncUint, HeError> {
                match (self, other) {
                    $((EncUint::$var(a), EncUint::$var(b)) => Ok(EncUint::$var(a.ge(b).if_then_zero(&(a - b)))),)*
                    _ => Err(HeError::Tfhe("subtracting integers of different widths".into())),
                }
            }

            /// Its blocks (least significant first) and tag.
            pub fn into_blocks(self) -> (Vec<Ciphertext>, Tag) {
                match self {
                    $(EncUint::$var(c) => {
                        let (radix, _, tag, _) = c.into_raw_parts();
                        (radix.into_blocks(), tag)
                    })*
                }
            }

            /// A `bits`-wide integer from its blocks (2 bits each, least significant first).
            pub fn from_blocks(bits: u32, blocks: Vec<Ciphertext>, tag: Tag) -> Result<EncUint, HeError> {
                if blocks.len() != bits as usize / 2 {
                    return Err(HeError::Tfhe(format!("{} blocks for a {bits}-bit integer", blocks.len())));
                }
                match bits {
                    $($bits => Ok(EncUint::$var(tfhe::$ty::from_raw_parts(
                        RadixCiphertext::from(blocks),
                        Default::default(),
                        tag,
                        Default::default(),
                    ))),)*
                    _ => Err(unsupported_width(bits)),
                }
            }

            /// Decrypts with the client key.
            pub fn decrypt(&self, key: &ClientKey) -> u64 {
                match self { $(EncUint::$var(c) => { let x: u64 = c.decrypt(key); x })* }
            }

            /// Adds another value of the same width (wrapping).
            pub fn add(&self, other: &EncUint) -> Result<EncUint, HeError> {
                match (self, other) {
                    $((EncUint::$var(a), EncUint::$var(b)) => Ok(EncUint::$var(a + b)),)*
                    _ => Err(HeError::Tfhe("adding integers of different widths".into())),
                }
            }

            /// Adds a clear value modulo 2^bits (wrapping), e.g. noise in two's complement.
            pub fn add_clear_wrapping(&self, x: u64) -> EncUint {
                match self {
                    $(EncUint::$var(c) => {
                        let mask = u64::MAX >> (64 - $bits);
                        EncUint::$var(c + ((x & mask) as $clear))
                    })*
                }
            }

            /// Itself where `keep` is true, else an encrypted zero.
            pub fn keep_if(&self, keep: &FheBool) -> EncUint {
                match self { $(EncUint::$var(c) => EncUint::$var(keep.if_then_zero(c)),)* }
            }

            /// Appends it to a list being compressed.
            pub fn push_into(&self, list: &mut CompressedCiphertextListBuilder) {
                match self { $(EncUint::$var(c) => { list.push(c.clone()); })* }
            }

            /// Reads element `i` of a compressed list, which must be a `bits`-wide integer.
            pub fn from_list(
                list: &CompressedCiphertextList,
                i: usize,
                bits: u32,
            ) -> Result<EncUint, HeError> {
                let bad = |r: String| HeError::blob("result list", r);
                let kind = list.get_kind_of(i).ok_or_else(|| bad(format!("no element {i}")))?;
                match bits {
                    $($bits => {
                        if kind != FheTypes::$kind {
                            return Err(bad(format!("element {i} is a {kind:?}, not a {}", stringify!($ty))));
                        }
                        let v: tfhe::$ty = list
                            .get(i)
                            .map_err(|e| bad(e.to_string()))?
                            .ok_or_else(|| bad(format!("no element {i}")))?;
                        Ok(EncUint::$var(v))
                    })*
                    _ => Err(unsupported_width(bits)),
                }
            }

            /// Reads element `i` of an expanded compact list as a `bits`-wide integer.
            pub fn from_expander(
                list: &CompactCiphertextListExpander,
                i: usize,
                bits: u32,
            ) -> Result<EncUint, HeError> {
                let bad = |r: String| HeError::Tfhe(format!("compact list element {i}: {r}"));
                match bits {
                    $($bits => {
                        let v: tfhe::$ty = list
                            .get(i)
                            .map_err(|e| bad(e.to_string()))?
                            .ok_or_else(|| bad("missing".into()))?;
                        Ok(EncUint::$var(v))
                    })*
                    _ => Err(unsupported_width(bits)),
                }
            }
        }

        /// Encrypts a filter constant's code with the client key, as the blob a node receives.
        pub fn encrypt_constant(key: &ClientKey, bits: u32, code: u64) -> Result<Vec<u8>, HeError> {
            match constant_bits(bits)? {
                $($bits => {
                    let c = tfhe::$cty::try_encrypt(code, key).map_err(|e| HeError::Tfhe(e.to_string()))?;
                    serialize(&c)
                })*
                w => Err(unsupported_width(w)),
            }
        }

        /// Reads a filter constant blob: size-limited, conformant to our parameters and of the
        /// width the query's shape announces.
        pub fn read_constant(bytes: &[u8], bits: u32) -> Result<EncUint, HeError> {
            if bytes.len() > MAX_CONSTANT_BYTES {
                return Err(HeError::blob("constant", "too large"));
            }
            match constant_bits(bits)? {
                $($bits => {
                    let params = tfhe::$params::from(PARAM_MESSAGE_2_CARRY_2_KS_PBS_TUNIFORM_2M128);
                    let c: tfhe::$cty = safe_deserialize_conformant(bytes, MAX_CONSTANT_BYTES as u64, &params)
                        .map_err(|e| HeError::blob("constant", e))?;
                    Ok(EncUint::$var(c.decompress()))
                })*
                w => Err(unsupported_width(w)),
            }
        }
    };
}

widths! {
    U2 2 FheUint2 CompressedFheUint2 CompressedFheUint2ConformanceParams Uint2 u8;
    U4 4 FheUint4 CompressedFheUint4 CompressedFheUint4ConformanceParams Uint4 u8;
    U6 6 FheUint6 CompressedFheUint6 CompressedFheUint6ConformanceParams Uint6 u8;
    U8 8 FheUint8 CompressedFheUint8 CompressedFheUint8ConformanceParams Uint8 u8;
    U10 10 FheUint10 CompressedFheUint10 CompressedFheUint10ConformanceParams Uint10 u16;
    U12 12 FheUint12 CompressedFheUint12 CompressedFheUint12ConformanceParams Uint12 u16;
    U14 14 FheUint14 CompressedFheUint14 CompressedFheUint14ConformanceParams Uint14 u16;
    U16 16 FheUint16 CompressedFheUint16 CompressedFheUint16ConformanceParams Uint16 u16;
    U32 32 FheUint32 CompressedFheUint32 CompressedFheUint32ConformanceParams Uint32 u32;
    U64 64 FheUint64 CompressedFheUint64 CompressedFheUint64ConformanceParams Uint64 u64;
}

/// `lookup` for one input width, into any output width.
fn lookup_into<Id: FheUintId>(
    index: &FheUint<Id>,
    table: &MatchValues<u64>,
    bits: u32,
) -> Result<EncUint, HeError> {
    macro_rules! out {
        ($($var:ident $bits:literal $id:ident;)*) => {
            match bits {
                $($bits => index
                    .match_value::<u64, tfhe::$id>(table)
                    .map(|(v, _)| EncUint::$var(v))
                    .map_err(|e| HeError::Tfhe(e.to_string())),)*
                _ => Err(unsupported_width(bits)),
            }
        };
    }
    out! {
        U8 8 FheUint8Id; U10 10 FheUint10Id; U12 12 FheUint12Id; U14 14 FheUint14Id;
        U16 16 FheUint16Id; U32 32 FheUint32Id; U64 64 FheUint64Id;
    }
}

fn unsupported_width(bits: u32) -> HeError {
    HeError::Tfhe(format!("no {bits}-bit encrypted integer type"))
}

/// The narrowest width (in 2-bit blocks) up to 16 bits, then 32 and 64, that holds `bits`.
pub fn width_for(bits: u32) -> u32 {
    match bits {
        0..=16 => bits.max(2).next_multiple_of(2),
        17..=32 => 32,
        _ => 64,
    }
}

/// The ciphertext width of a constant whose code needs `bits` (at most 32).
pub fn constant_bits(bits: u32) -> Result<u32, HeError> {
    match bits {
        0..=32 => Ok(width_for(bits)),
        _ => Err(unsupported_width(bits)),
    }
}

/// `value op c` for an encrypted `c`: flips the comparison to put the ciphertext first.
fn compare<T>(c: &T, value: u64, op: CmpOp) -> FheBool
where
    T: FheEq<u64> + FheOrd<u64>,
{
    match op {
        CmpOp::Eq => c.eq(value),
        CmpOp::NotEq => c.ne(value),
        CmpOp::Lt => c.gt(value),
        CmpOp::LtEq => c.ge(value),
        CmpOp::Gt => c.lt(value),
        CmpOp::GtEq => c.le(value),
    }
}

/// Adds a clear value of `bits` to a compact list being encrypted under the public key.
pub fn push_compact(
    list: &mut CompactCiphertextListBuilder,
    bits: u32,
    value: u64,
) -> Result<(), HeError> {
    list.push_with_num_bits(value, bits as usize)
        .map_err(|e| HeError::Tfhe(e.to_string()))?;
    Ok(())
}

/// Compresses values into one list and serialises it (needs the server key's compression key).
pub fn compress(values: &[EncUint]) -> Result<Vec<u8>, HeError> {
    let mut list = CompressedCiphertextListBuilder::new();
    for v in values {
        v.push_into(&mut list);
    }
    let list = list.build().map_err(|e| HeError::Tfhe(e.to_string()))?;
    serialize(&list)
}

/// Reads a result list of the announced widths (needs the server key's decompression key).
///
/// TFHE-rs 1.8 has no conformance check for high-level compressed lists, so the blob is
/// size-limited here, and the element count and each element's type are checked against the
/// layout before anything is decompressed.
pub fn read_results(bytes: &[u8], bits: &[u32]) -> Result<Vec<EncUint>, HeError> {
    if bytes.len() > MAX_RESULT_BYTES {
        return Err(HeError::blob("result list", "too large"));
    }
    let list: CompressedCiphertextList = safe_deserialize(bytes, MAX_RESULT_BYTES as u64)
        .map_err(|e| HeError::blob("result list", e))?;
    if list.len() != bits.len() {
        return Err(HeError::blob(
            "result list",
            format!("{} elements, {} announced", list.len(), bits.len()),
        ));
    }
    for (i, b) in bits.iter().enumerate() {
        if list.get_kind_of(i).is_none() {
            return Err(HeError::blob(
                "result list",
                format!("element {i} ({b} bits) is unreadable"),
            ));
        }
    }
    bits.iter()
        .enumerate()
        .map(|(i, b)| EncUint::from_list(&list, i, *b))
        .collect()
}

/// Reads the result of a query without encrypted constants: a compact list the node encrypted
/// under the compact public key (`keys::config`'s encryption parameters, exactly one element
/// per announced cell), expanded here with the key holder's own server key (which must be set).
/// Expanding at the key holder spares the node an expansion and a compression, and the key
/// holder a decompression.
pub fn read_compact_results(bytes: &[u8], bits: &[u32]) -> Result<Vec<EncUint>, HeError> {
    if bytes.len() > MAX_RESULT_BYTES {
        return Err(HeError::blob("result list", "too large"));
    }
    let pke = super::keys::config()
        .public_key_encryption_parameters()
        .map_err(|e| HeError::Tfhe(e.to_string()))?;
    let params = tfhe::CompactCiphertextListConformanceParams::from_parameters_and_size_constraint(
        pke,
        tfhe::conformance::ListSizeConstraint::exact_size(bits.len()),
    )
    .allow_unpacked();
    let list: CompactCiphertextList =
        safe_deserialize_conformant(bytes, MAX_RESULT_BYTES as u64, &params)
            .map_err(|e| HeError::blob("result list", e))?;
    let expanded = list.expand().map_err(|e| HeError::blob("result list", e))?;
    bits.iter()
        .enumerate()
        .map(|(i, b)| {
            EncUint::from_expander(&expanded, i, *b).map_err(|e| HeError::blob("result list", e))
        })
        .collect()
}
