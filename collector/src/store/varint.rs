//! The byte-level pieces shared by the stored formats (`chunk.rs`, `rollup.rs`): LEB128
//! varints, zigzag for signed values, and a bounds-checked reader whose every failure is an
//! error naming what was wrong, never a panic.

/// What was wrong with the bytes; each format wraps it in its own error.
#[derive(Debug)]
pub struct Damaged(pub String);

pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

pub fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub fn varint(&mut self) -> Result<u64, Damaged> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = *self
                .buf
                .get(self.pos)
                .ok_or_else(|| Damaged("truncated".into()))?;
            self.pos += 1;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Damaged("varint too long".into()))
    }

    /// A length or count of at most `limit`, so a damaged one cannot allocate without bound.
    pub fn len(&mut self, limit: usize) -> Result<usize, Damaged> {
        let n = self.varint()?;
        usize::try_from(n)
            .ok()
            .filter(|&n| n <= limit)
            .ok_or_else(|| Damaged(format!("length {n} out of range")))
    }

    pub fn bytes(&mut self, n: usize) -> Result<&'a [u8], Damaged> {
        let end = self
            .pos
            .checked_add(n)
            .ok_or_else(|| Damaged("truncated".into()))?;
        let b = self
            .buf
            .get(self.pos..end)
            .ok_or_else(|| Damaged("truncated".into()))?;
        self.pos = end;
        Ok(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_and_zigzag_round_trip_and_damage_is_an_error() {
        let values = [0i64, 1, -1, 63, -64, 1 << 40, i64::MIN, i64::MAX];
        let mut out = Vec::new();
        for v in values {
            put_varint(&mut out, zigzag(v));
        }
        let mut r = Reader::new(&out);
        for v in values {
            assert_eq!(unzigzag(r.varint().unwrap()), v);
        }
        assert_eq!(r.remaining(), 0);
        assert!(r.varint().is_err() && r.bytes(1).is_err());
        let mut r = Reader::new(&[0xff; 11]);
        assert!(r.varint().is_err());
        let mut r = Reader::new(&[200]);
        assert!(r.len(10).is_err());
    }
}
