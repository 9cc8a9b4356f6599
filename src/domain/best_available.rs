//! Choosing seats for a buyer who asks for the best `quantity` seats rather than naming them.
//!
//! A **block** is `quantity` free seats side by side in one row (consecutive numbers). Blocks are
//! ranked by, in order:
//! 1. whether they leave an **orphan**: one free seat alone between taken seats or at a row's end
//!    (never chosen while a block without one exists);
//! 2. how many of the free runs beside the block could not be filled by further blocks of the
//!    same size (a run whose length is not a multiple of `quantity`): a block in the middle of a
//!    free run of ten, for pairs, leaves odd runs that end in orphans later; one placed on the
//!    even boundary does not;
//! 3. the row: nearer the front first (the seat map's order);
//! 4. the distance of the block's centre from the row's centre.
//!
//! Concurrent buyers should not all race for the first block: [`choose`] picks at random among
//! the best [`SPREAD`] blocks that are as good as the best on the first two counts (so the spread
//! never strands a seat), and the database's guard stays the final word (a lost race answers 409
//! like any taken seat). With `allow_split`, when no block fits, the best free seats one by one.
//!
//! The input is the free seats only, in seat-map order: a block is a run of consecutive numbers,
//! its neighbours beyond the run are taken (or the row ends), and a row's middle is taken as the
//! middle of its free seats.

use rand::Rng;
use uuid::Uuid;

/// One seat of the section being chosen from, in seat-map order.
#[derive(Debug, Clone)]
pub struct Spot {
    pub id: Uuid,
    pub section: String,
    pub row: String,
    pub number: i32,
    /// Free, and within the price limit.
    pub free: bool,
}

/// How many of the best blocks a choice is drawn from.
pub const SPREAD: usize = 64;

#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub seats: Vec<Uuid>,
    pub orphans: u8,
    pub unpackable: u8,
    pub row_rank: usize,
    pub distance: f64,
}

impl Block {
    fn key(&self) -> (u8, u8, usize, f64) {
        (self.orphans, self.unpackable, self.row_rank, self.distance)
    }
}

/// What a request for the best seats gets.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// Side by side in one row.
    Block(Vec<Uuid>),
    /// Not side by side (only with `allow_split`).
    Split(Vec<Uuid>),
    /// Not enough: how many free seats there are (for the refusal).
    Nothing { free: usize },
}

/// Every block of `quantity` seats, best first.
pub fn ranked_blocks(spots: &[Spot], quantity: usize) -> Vec<Block> {
    let mut blocks = Vec::new();
    if quantity == 0 {
        return blocks;
    }
    for (row_rank, row) in rows(spots).into_iter().enumerate() {
        let centre = (f64::from(row[0].number) + f64::from(row[row.len() - 1].number)) / 2.0;
        // Free runs: consecutive free seats with consecutive numbers.
        let mut start = 0;
        while start < row.len() {
            if !row[start].free {
                start += 1;
                continue;
            }
            let mut end = start;
            while end + 1 < row.len() && row[end + 1].free && row[end + 1].number == row[end].number + 1 {
                end += 1;
            }
            let run = end + 1 - start;
            for first in start..=(end + 1).saturating_sub(quantity) {
                if first + quantity > end + 1 {
                    break;
                }
                let (left, right) = (first - start, run - (first - start) - quantity);
                let seats: Vec<Uuid> = row[first..first + quantity].iter().map(|s| s.id).collect();
                let mid = (f64::from(row[first].number) + f64::from(row[first + quantity - 1].number)) / 2.0;
                blocks.push(Block {
                    seats,
                    orphans: u8::from(left == 1) + u8::from(right == 1),
                    unpackable: u8::from(left % quantity != 0) + u8::from(right % quantity != 0),
                    row_rank,
                    distance: (mid - centre).abs(),
                });
            }
            start = end + 1;
        }
    }
    blocks.sort_by(|a, b| a.key().partial_cmp(&b.key()).unwrap_or(std::cmp::Ordering::Equal));
    blocks
}

/// The seats to hold: a block drawn from the best [`SPREAD`] (the best orphan-free ones when any
/// exists), else with `allow_split` the best free seats, else nothing.
pub fn choose(spots: &[Spot], quantity: usize, allow_split: bool, rng: &mut impl Rng) -> Choice {
    let blocks = ranked_blocks(spots, quantity);
    if let Some(best) = blocks.first() {
        // Never trade an orphan-free or fillable block for a worse one.
        let pool: Vec<&Block> = blocks
            .iter()
            .take_while(|b| (b.orphans, b.unpackable) == (best.orphans, best.unpackable))
            .take(SPREAD)
            .collect();
        return Choice::Block(pool[rng.random_range(0..pool.len())].seats.clone());
    }
    let free: Vec<(usize, f64, Uuid)> = rows(spots)
        .into_iter()
        .enumerate()
        .flat_map(|(rank, row)| {
            let centre = (f64::from(row[0].number) + f64::from(row[row.len() - 1].number)) / 2.0;
            row.into_iter().filter(|s| s.free).map(move |s| (rank, (f64::from(s.number) - centre).abs(), s.id))
        })
        .collect();
    if allow_split && free.len() >= quantity && quantity > 0 {
        let mut free = free;
        free.sort_by(|a, b| (a.0, a.1).partial_cmp(&(b.0, b.1)).unwrap_or(std::cmp::Ordering::Equal));
        return Choice::Split(free.into_iter().take(quantity).map(|(_, _, id)| id).collect());
    }
    Choice::Nothing { free: free.len() }
}

/// The spots grouped by row, in map order (the input is in map order already).
fn rows(spots: &[Spot]) -> Vec<Vec<&Spot>> {
    let mut rows: Vec<Vec<&Spot>> = Vec::new();
    for spot in spots {
        match rows.last_mut() {
            Some(row) if row[0].section == spot.section && row[0].row == spot.row => row.push(spot),
            _ => rows.push(vec![spot]),
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A row from a picture: `.` free, `x` taken, numbered from 1.
    fn row(label: &str, picture: &str) -> Vec<Spot> {
        picture
            .chars()
            .enumerate()
            .map(|(i, c)| Spot {
                id: Uuid::from_u128(((label.as_bytes()[0] as u128) << 64) | (i as u128 + 1)),
                section: "A".into(),
                row: label.into(),
                number: i as i32 + 1,
                free: c == '.',
            })
            .collect()
    }

    fn numbers(spots: &[Spot], ids: &[Uuid]) -> Vec<(String, i32)> {
        ids.iter()
            .map(|id| {
                let s = spots.iter().find(|s| s.id == *id).unwrap();
                (s.row.clone(), s.number)
            })
            .collect()
    }

    #[test]
    fn the_front_row_and_its_middle_come_first_on_the_packable_boundary() {
        let spots: Vec<Spot> = [row("1", ".........."), row("2", "..........")].concat();
        let best = &ranked_blocks(&spots, 2)[0];
        // Seats 5-6 leave runs of 4 and 4: fillable by pairs, and centred.
        assert_eq!(numbers(&spots, &best.seats), [("1".into(), 5), ("1".into(), 6)]);
        assert_eq!((best.orphans, best.unpackable, best.row_rank), (0, 0, 0));
    }

    #[test]
    fn never_leaves_an_orphan_when_another_choice_exists() {
        // Row 1 has a run of three: any pair there leaves one seat alone. Row 2 is worse placed
        // but leaves none.
        let spots: Vec<Spot> = [row("1", "xx...xxxxx"), row("2", "xxxxxx....")].concat();
        let mut rng = rand::rng();
        for _ in 0..50 {
            let Choice::Block(ids) = choose(&spots, 2, false, &mut rng) else { panic!("a block") };
            let got = numbers(&spots, &ids);
            assert!(got.iter().all(|(row, _)| row == "2"), "{got:?}");
        }
        // With no other choice, the orphan is accepted.
        let only: Vec<Spot> = row("1", "xx...xxxxx");
        assert!(matches!(choose(&only, 2, false, &mut rng), Choice::Block(_)));
    }

    #[test]
    fn blocks_need_consecutive_numbers_in_one_row() {
        let mut spots: Vec<Spot> = [row("1", ".x.x."), row("2", "x.x.x")].concat();
        assert!(ranked_blocks(&spots, 2).is_empty());
        let mut rng = rand::rng();
        assert_eq!(choose(&spots, 2, false, &mut rng), Choice::Nothing { free: 5 });
        let Choice::Split(ids) = choose(&spots, 3, true, &mut rng) else { panic!("a split") };
        assert_eq!(ids.len(), 3);
        assert!(numbers(&spots, &ids).iter().filter(|(row, _)| row == "1").count() == 3, "front row first");
        // A gap in the numbering breaks adjacency even when both seats are free.
        spots = row("1", "....");
        spots[2].number = 7;
        spots[3].number = 8;
        let blocks = ranked_blocks(&spots, 3);
        assert!(blocks.is_empty(), "{blocks:?}");
        assert_eq!(choose(&spots, 5, true, &mut rng), Choice::Nothing { free: 4 });
    }

    #[test]
    fn concurrent_choices_spread_over_the_best_few() {
        let spots = row("1", "....................");
        let mut rng = rand::rng();
        let picks: std::collections::HashSet<Vec<Uuid>> = (0..200)
            .filter_map(|_| match choose(&spots, 2, false, &mut rng) {
                Choice::Block(ids) => Some(ids),
                _ => None,
            })
            .collect();
        assert!(picks.len() > 1 && picks.len() <= SPREAD, "{}", picks.len());
        // Every pick leaves even runs on both sides: pairs can fill the row to the last seat.
        for ids in picks {
            let first = numbers(&spots, &ids)[0].1;
            assert_eq!((first - 1) % 2, 0, "{first}");
        }
    }
}
