//! lov: RAID-0 striping of a file over OST objects.
//!
//! Owns the arithmetic that maps file offsets to (stripe, object offset),
//! splits an I/O range into per-stripe extents, and derives a file's size
//! from its objects' sizes (and back, for truncate). Pure functions over a
//! [`Stripes`] shape; it knows nothing of RPCs or OSTs.

/// The shape of a striped layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stripes {
    /// Bytes per stripe chunk (Lustre's default is 1 MiB); a multiple of 4 KiB.
    pub size: u64,
    /// Number of objects the file is striped over (at least 1).
    pub count: u32,
}

/// Why a layout shape is unusable.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// Stripe size zero or not a multiple of 64 KiB (Lustre's rule).
    #[error("stripe size {0} must be a positive multiple of 65536")]
    StripeSize(u64),
    /// Stripe count zero or above the limit.
    #[error("stripe count {0} must be between 1 and {max}", max = MAX_STRIPE_COUNT)]
    StripeCount(u32),
}

/// Most objects one file may be striped over (Lustre's LOV_MAX_STRIPE_COUNT).
pub const MAX_STRIPE_COUNT: u32 = 2000;

/// One piece of an I/O range that lands in a single object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Which stripe (object) of the layout.
    pub stripe: u32,
    /// Offset within that object.
    pub obj_off: u64,
    /// Offset within the file.
    pub file_off: u64,
    /// Bytes.
    pub len: u64,
}

impl Stripes {
    /// A validated shape.
    pub fn new(size: u64, count: u32) -> Result<Stripes, LayoutError> {
        if size == 0 || !size.is_multiple_of(64 << 10) {
            return Err(LayoutError::StripeSize(size));
        }
        if count == 0 || count > MAX_STRIPE_COUNT {
            return Err(LayoutError::StripeCount(count));
        }
        Ok(Stripes { size, count })
    }

    fn row(&self) -> u64 {
        self.size * u64::from(self.count)
    }

    /// Which stripe holds file offset `off`, and where in its object.
    pub fn locate(&self, off: u64) -> (u32, u64) {
        let row = off / self.row();
        let in_row = off % self.row();
        let stripe = (in_row / self.size) as u32;
        (stripe, row * self.size + in_row % self.size)
    }

    /// The file offset of byte `obj_off` of stripe `stripe`.
    pub fn file_offset(&self, stripe: u32, obj_off: u64) -> u64 {
        let row = obj_off / self.size;
        row * self.row() + u64::from(stripe) * self.size + obj_off % self.size
    }

    /// Splits `[off, off+len)` into extents, in file order, each within one
    /// stripe chunk.
    pub fn split(&self, off: u64, len: u64) -> Vec<Extent> {
        let mut out = Vec::new();
        let end = off.saturating_add(len);
        let mut pos = off;
        while pos < end {
            let (stripe, obj_off) = self.locate(pos);
            let chunk_left = self.size - obj_off % self.size;
            let n = chunk_left.min(end - pos);
            out.push(Extent { stripe, obj_off, file_off: pos, len: n });
            pos += n;
        }
        out
    }

    /// The file size implied by each stripe's object size (the largest file
    /// offset any object reaches).
    pub fn file_size(&self, obj_sizes: &[u64]) -> u64 {
        obj_sizes
            .iter()
            .enumerate()
            .filter(|&(_, &s)| s > 0)
            .map(|(i, &s)| self.file_offset(i as u32, s - 1) + 1)
            .max()
            .unwrap_or(0)
    }

    /// The size stripe `stripe`'s object has when the file is `file_size`
    /// bytes long (what truncate sets each object to).
    pub fn object_size(&self, stripe: u32, file_size: u64) -> u64 {
        if file_size == 0 {
            return 0;
        }
        let (s, o) = self.locate(file_size - 1);
        let full_rows = (file_size - 1) / self.row();
        match stripe.cmp(&s) {
            std::cmp::Ordering::Equal => o + 1,
            std::cmp::Ordering::Less => (full_rows + 1) * self.size,
            std::cmp::Ordering::Greater => full_rows * self.size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_lustre_picture() {
        // 3 stripes of 1 MiB: file MiB 0,1,2 -> objects 0,1,2 at 0; MiB 3 -> object 0 at 1 MiB.
        let s = Stripes::new(MIB, 3).unwrap();
        assert_eq!(s.locate(0), (0, 0));
        assert_eq!(s.locate(MIB + 5), (1, 5));
        assert_eq!(s.locate(3 * MIB), (0, MIB));
        let ex = s.split(MIB - 10, 20);
        assert_eq!(ex.len(), 2);
        assert_eq!((ex[0].stripe, ex[0].obj_off, ex[0].len), (0, MIB - 10, 10));
        assert_eq!((ex[1].stripe, ex[1].obj_off, ex[1].len), (1, 0, 10));
        assert_eq!(s.file_size(&[MIB + 1, MIB, MIB]), 3 * MIB + 1);
        assert_eq!(s.file_size(&[0, 0, 0]), 0);
    }

    #[test]
    fn bad_shapes_are_refused() {
        assert_eq!(Stripes::new(1000, 1), Err(LayoutError::StripeSize(1000)));
        assert_eq!(Stripes::new(MIB, 0), Err(LayoutError::StripeCount(0)));
        assert!(Stripes::new(MIB, 2001).is_err());
    }

    fn shape() -> impl Strategy<Value = Stripes> {
        (1u64..8, 1u32..9).prop_map(|(k, c)| Stripes::new(k * 64 * 1024, c).unwrap())
    }

    proptest! {
        #[test]
        fn split_covers_exactly_and_agrees_with_locate(s in shape(), off in 0u64..(64 * MIB), len in 0u64..(8 * MIB)) {
            let ex = s.split(off, len);
            prop_assert_eq!(ex.iter().map(|e| e.len).sum::<u64>(), len);
            let mut pos = off;
            for e in &ex {
                prop_assert_eq!(e.file_off, pos);
                prop_assert_eq!(s.locate(pos), (e.stripe, e.obj_off));
                prop_assert_eq!(s.file_offset(e.stripe, e.obj_off), pos);
                prop_assert!(e.obj_off / s.size == (e.obj_off + e.len - 1) / s.size, "one chunk");
                pos += e.len;
            }
        }

        #[test]
        fn truncate_sizes_imply_the_file_size(s in shape(), size in 0u64..(64 * MIB)) {
            let objs: Vec<u64> = (0..s.count).map(|i| s.object_size(i, size)).collect();
            prop_assert_eq!(s.file_size(&objs), size);
            // Each object holds exactly the bytes of the file below `size` that map to it.
            let total: u64 = objs.iter().sum();
            prop_assert_eq!(total, size);
        }
    }
}
