//! The HE key holder's key sets: the current key id and each key set's stored bytes.

use redb::ReadableDatabase;

use super::tables::HE_KEY_HOLDER;
use super::{Store, StoreError};

const CURRENT: &str = "current";

impl Store {
    /// The current HE key id and its stored key set's bytes, if one was generated.
    pub fn he_key_set(&self) -> Result<Option<(String, Vec<u8>)>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(HE_KEY_HOLDER) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let Some(id) = table.get(CURRENT)? else {
            return Ok(None);
        };
        let id = String::from_utf8_lossy(id.value()).into_owned();
        let record = table.get(id.as_str())?.ok_or_else(|| {
            StoreError::Corrupt(id.clone(), "the current key id has no record".into())
        })?;
        Ok(Some((id, record.value().to_vec())))
    }

    /// The current HE key id, without reading the key set.
    pub fn he_key_id(&self) -> Result<Option<String>, StoreError> {
        let txn = self.db.begin_read()?;
        let table = match txn.open_table(HE_KEY_HOLDER) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(table
            .get(CURRENT)?
            .map(|v| String::from_utf8_lossy(v.value()).into_owned()))
    }

    /// Stores a key set and makes it current, durably.
    pub fn put_he_key_set(&self, key_id: &str, record: &[u8]) -> Result<(), StoreError> {
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(HE_KEY_HOLDER)?;
            t.insert(key_id, record)?;
            t.insert(CURRENT, key_id.as_bytes())?;
        }
        txn.commit()?;
        Ok(())
    }
}
