//! Job ids as the column type each backend does best: `uuid` on Postgres, hyphenated
//! text on SQLite (so `sweeper query` shows them as the CLI prints them).

use sqlx::encode::IsNull;
use sqlx::error::BoxDynError;
use sqlx::postgres::{PgTypeInfo, PgValueRef};
use sqlx::sqlite::{SqliteTypeInfo, SqliteValueRef};
use sqlx::{Database, Decode, Encode, Postgres, Sqlite, Type};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Id(pub Uuid);

/// The start of a job id as a user types it (`0190f5e2-7c`, or the whole id): the
/// range of ids that begin with it. Hyphens are ignored, case too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdPrefix {
    pub first: Uuid,
    pub last: Uuid,
}

impl IdPrefix {
    /// None unless `text` holds 1 to 32 hexadecimal digits (and any hyphens).
    pub fn parse(text: &str) -> Option<IdPrefix> {
        let digits: String = text.chars().filter(|c| *c != '-').collect();
        if digits.is_empty() || digits.len() > 32 || !digits.chars().all(|c| c.is_ascii_hexdigit())
        {
            return None;
        }
        let fill = |pad: char| {
            let mut full = digits.to_ascii_lowercase();
            full.extend(std::iter::repeat(pad).take(32 - digits.len()));
            Uuid::parse_str(&full).ok()
        };
        Some(IdPrefix {
            first: fill('0')?,
            last: fill('f')?,
        })
    }
}

impl Type<Sqlite> for Id {
    fn type_info() -> SqliteTypeInfo {
        <String as Type<Sqlite>>::type_info()
    }
    fn compatible(ty: &SqliteTypeInfo) -> bool {
        <String as Type<Sqlite>>::compatible(ty)
    }
}

impl<'q> Encode<'q, Sqlite> for Id {
    fn encode_by_ref(
        &self,
        buf: &mut <Sqlite as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <String as Encode<'q, Sqlite>>::encode(self.0.hyphenated().to_string(), buf)
    }
}

impl<'r> Decode<'r, Sqlite> for Id {
    fn decode(value: SqliteValueRef<'r>) -> Result<Self, BoxDynError> {
        let text = <&str as Decode<Sqlite>>::decode(value)?;
        Ok(Id(Uuid::parse_str(text)?))
    }
}

impl Type<Postgres> for Id {
    fn type_info() -> PgTypeInfo {
        <Uuid as Type<Postgres>>::type_info()
    }
}

impl<'q> Encode<'q, Postgres> for Id {
    fn encode_by_ref(
        &self,
        buf: &mut <Postgres as Database>::ArgumentBuffer<'q>,
    ) -> Result<IsNull, BoxDynError> {
        <Uuid as Encode<'q, Postgres>>::encode_by_ref(&self.0, buf)
    }
}

impl<'r> Decode<'r, Postgres> for Id {
    fn decode(value: PgValueRef<'r>) -> Result<Self, BoxDynError> {
        <Uuid as Decode<Postgres>>::decode(value).map(Id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_prefix_is_the_range_of_ids_it_starts() {
        let prefix = IdPrefix::parse("0190F5E2-7c").unwrap();
        assert_eq!(
            prefix.first,
            Uuid::parse_str("0190f5e2-7c00-0000-0000-000000000000").unwrap()
        );
        assert_eq!(
            prefix.last,
            Uuid::parse_str("0190f5e2-7cff-ffff-ffff-ffffffffffff").unwrap()
        );
        let id = "0190f5e2-7c1a-7d3e-8f00-000000000001";
        let whole = IdPrefix::parse(id).unwrap();
        assert_eq!(whole.first, whole.last);
        assert_eq!(whole.first.to_string(), id);
        for bad in ["", "-", "0190g", "0190f5e2-7c1a-7d3e-8f00-0000000000012"] {
            assert_eq!(IdPrefix::parse(bad), None, "{bad:?}");
        }
    }
}
