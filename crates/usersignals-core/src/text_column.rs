//! A text column's buffers — an Arrow `large_string` column's offsets and texts — gathered
//! into a new order (`usersignals.offline.features_file`: a training set's values put into
//! the label file's row order).
//!
//! Arrow's own `take` grows its output by doubling, and the caller first joined the shards'
//! tables into one copy. Here the output is sized once, from the offsets, each text is
//! copied once, and the chunks are read where they lie: at 1 M events and 50,000 labels
//! (380 MB of JSON texts), the ordering went from 0.33-0.39 s to 0.26-0.34 s without
//! transparent huge pages (as the offline commands run); with them, where the kernel zeroed
//! every page the doubling touched, from 0.73-1.09 s to 0.22-0.64 s.

use crate::error::CoreError;

/// One chunk of a column: `offsets.len() - 1` texts, text `i` being
/// `data[offsets[i]..offsets[i + 1]]` (Arrow's layout; the first offset need not be 0).
/// Only the texts a gather picks are checked: a call per row group costs what the group
/// holds, not what the whole column does.
#[derive(Debug, Clone, Copy)]
pub struct TextChunk<'a> {
    pub offsets: &'a [i64],
    pub data: &'a [u8],
}

impl TextChunk<'_> {
    fn len(&self) -> usize {
        self.offsets.len().saturating_sub(1)
    }

    /// The byte range of text `index` (below [`Self::len`]), refused unless it lies within
    /// the texts.
    fn span(&self, index: usize) -> Result<(usize, usize), CoreError> {
        let (start, end) = (self.offsets[index], self.offsets[index + 1]);
        match (usize::try_from(start), usize::try_from(end)) {
            (Ok(start), Ok(end)) if start <= end && end <= self.data.len() => Ok((start, end)),
            _ => Err(CoreError::Batch(format!(
                "text offsets {start}..{end} outside the {} bytes of texts",
                self.data.len()
            ))),
        }
    }
}

/// The texts of `chunks`, read as one column, in the order `order` gives (indices into
/// that column, each any number of times): the new offsets (from 0, `order.len() + 1` of
/// them) and the texts one after another.
pub fn gather(chunks: &[TextChunk<'_>], order: &[i64]) -> Result<(Vec<i64>, Vec<u8>), CoreError> {
    gather_with(chunks, order, Vec::with_capacity)
}

/// [`gather`], the texts written into the vector `room(size)` returns for their `size`
/// bytes (emptied here; room for them or not). A caller that lends its own vectors, kept
/// from one call to the next, has the texts written into memory already in use, not into
/// pages the system must map and zero first: a training set's row group of `LastN` texts
/// is about 240 MB, and gathering it into new memory was 70 % page faults.
pub fn gather_with(
    chunks: &[TextChunk<'_>],
    order: &[i64],
    room: impl FnOnce(usize) -> Vec<u8>,
) -> Result<(Vec<i64>, Vec<u8>), CoreError> {
    // Where each chunk's texts start in the column: a text is found by a binary search.
    let mut starts = Vec::with_capacity(chunks.len());
    let mut total = 0usize;
    for chunk in chunks {
        starts.push(total);
        total += chunk.len();
    }
    let mut spans = Vec::with_capacity(order.len());
    let mut offsets = Vec::with_capacity(order.len() + 1);
    let mut size = 0usize;
    offsets.push(0i64);
    for &index in order {
        let at = usize::try_from(index)
            .ok()
            .filter(|&i| i < total)
            .ok_or_else(|| CoreError::Batch(format!("text index {index} of {total} texts")))?;
        let chunk = starts.partition_point(|&start| start <= at) - 1;
        let (start, end) = chunks[chunk].span(at - starts[chunk])?;
        size += end - start;
        let offset = i64::try_from(size)
            .map_err(|_| CoreError::Batch("gathered texts past i64 offsets".into()))?;
        offsets.push(offset);
        spans.push((chunk, start, end));
    }
    let mut data = room(size);
    data.clear();
    data.reserve(size);
    for (chunk, start, end) in spans {
        data.extend_from_slice(&chunks[chunk].data[start..end]);
    }
    Ok((offsets, data))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A chunk's buffers from its texts, the offsets starting at `first` (a sliced array's).
    fn buffers(texts: &[Vec<u8>], first: usize) -> (Vec<i64>, Vec<u8>) {
        let mut data = vec![b'#'; first];
        let mut offsets = vec![first as i64];
        for text in texts {
            data.extend_from_slice(text);
            offsets.push(data.len() as i64);
        }
        (offsets, data)
    }

    proptest! {
        #[test]
        fn gathers_the_texts_in_the_order_given(
            columns in prop::collection::vec(
                (prop::collection::vec(prop::collection::vec(any::<u8>(), 0..12), 0..8), 0..3usize),
                0..4,
            ),
            picks in prop::collection::vec(any::<prop::sample::Index>(), 0..30),
        ) {
            let built: Vec<_> = columns.iter().map(|(texts, first)| buffers(texts, *first)).collect();
            let chunks: Vec<_> = built
                .iter()
                .map(|(offsets, data)| TextChunk { offsets, data })
                .collect();
            let all: Vec<&Vec<u8>> = columns.iter().flat_map(|(texts, _)| texts).collect();
            let order: Vec<i64> = if all.is_empty() {
                Vec::new()
            } else {
                picks.iter().map(|pick| pick.index(all.len()) as i64).collect()
            };
            let (offsets, data) = gather(&chunks, &order).unwrap();
            let mut expected = vec![0i64];
            let mut texts = Vec::new();
            for &index in &order {
                texts.extend_from_slice(all[index as usize]);
                expected.push(texts.len() as i64);
            }
            prop_assert_eq!(offsets, expected);
            prop_assert_eq!(data, texts);
        }
    }

    /// A lent vector, with room or without, left dirty by its last use, gives the texts
    /// `gather` gives, in its own memory when it had room.
    #[test]
    fn gathers_into_a_lent_vector() {
        let (offsets, data) = buffers(&[b"ab".to_vec(), b"cde".to_vec()], 1);
        let chunk = TextChunk {
            offsets: &offsets,
            data: &data,
        };
        let expected = gather(&[chunk], &[1, 0, 1]).unwrap();
        for capacity in [0, 3, 64] {
            let mut lent = Vec::with_capacity(capacity);
            lent.extend_from_slice(&b"dirty"[..capacity.min(5)]);
            let place = lent.as_ptr();
            let got = gather_with(&[chunk], &[1, 0, 1], |size| {
                assert_eq!(size, 8);
                lent
            })
            .unwrap();
            assert_eq!(got, expected);
            if capacity >= 8 {
                assert_eq!(got.1.as_ptr(), place);
            }
        }
    }

    #[test]
    fn refuses_an_index_out_of_range() {
        let (offsets, data) = buffers(&[b"a".to_vec(), b"bc".to_vec()], 0);
        let chunk = TextChunk {
            offsets: &offsets,
            data: &data,
        };
        assert!(gather(&[chunk], &[2]).is_err());
        assert!(gather(&[chunk], &[-1]).is_err());
        assert_eq!(gather(&[chunk], &[1, 0, 1]).unwrap().1, b"bcabc".to_vec());
    }

    #[test]
    fn refuses_offsets_that_do_not_fit_the_texts() {
        let data = b"abc".to_vec();
        for offsets in [vec![], vec![0], vec![0, 4], vec![2, 1], vec![-1, 1]] {
            let chunk = TextChunk {
                offsets: &offsets,
                data: &data,
            };
            assert!(gather(&[chunk], &[0]).is_err(), "{offsets:?}");
        }
        // Only the texts picked are read: a bad one elsewhere in the chunk is not.
        let offsets = vec![0, 1, 9];
        let chunk = TextChunk {
            offsets: &offsets,
            data: &data,
        };
        assert_eq!(gather(&[chunk], &[0]).unwrap().1, b"a".to_vec());
    }
}
