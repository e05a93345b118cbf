//! Go's `sort.Sort` as Go 1.16 has it, the release etcd 3.5.1 was built
//! with: quicksort with a ninther pivot, a guard against many equal
//! elements, heapsort past a depth limit, and a gap-6 shell pass before
//! insertion sort on short runs. It is not stable, so a Range sorted by
//! version, revision or value returns equal elements in the order this
//! exact algorithm leaves them; reproducing it makes the fake's order of
//! ties etcd 3.5.1's, element for element. (Go 1.19 and later sort with
//! pdqsort and order ties differently; the fake reports 3.5.1.)

/// Sorts `data` in place as Go 1.16's `sort.Sort` would, given its `Less`.
pub(crate) fn sort<T>(data: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let n = data.len();
    let mut sorter = Sorter { data, less };
    sorter.quick_sort(0, n, max_depth(n));
}

/// Twice the number of bits of `n`: the recursion depth before heapsort.
fn max_depth(n: usize) -> usize {
    let mut depth = 0;
    let mut i = n;
    while i > 0 {
        depth += 1;
        i >>= 1;
    }
    depth * 2
}

struct Sorter<'d, T, L> {
    data: &'d mut [T],
    less: L,
}

impl<T, L: Fn(&T, &T) -> bool> Sorter<'_, T, L> {
    fn less(&self, i: usize, j: usize) -> bool {
        (self.less)(&self.data[i], &self.data[j])
    }

    fn swap(&mut self, i: usize, j: usize) {
        self.data.swap(i, j);
    }

    fn insertion_sort(&mut self, a: usize, b: usize) {
        for i in a + 1..b {
            let mut j = i;
            while j > a && self.less(j, j - 1) {
                self.swap(j, j - 1);
                j -= 1;
            }
        }
    }

    fn sift_down(&mut self, lo: usize, hi: usize, first: usize) {
        let mut root = lo;
        loop {
            let mut child = 2 * root + 1;
            if child >= hi {
                return;
            }
            if child + 1 < hi && self.less(first + child, first + child + 1) {
                child += 1;
            }
            if !self.less(first + root, first + child) {
                return;
            }
            self.swap(first + root, first + child);
            root = child;
        }
    }

    fn heap_sort(&mut self, a: usize, b: usize) {
        let first = a;
        let hi = b - a;
        let mut i = (hi as isize - 1) / 2;
        while i >= 0 {
            self.sift_down(i as usize, hi, first);
            i -= 1;
        }
        let mut i = hi as isize - 1;
        while i >= 0 {
            self.swap(first, first + i as usize);
            self.sift_down(0, i as usize, first);
            i -= 1;
        }
    }

    /// Sorts the three elements so that `data[m0] <= data[m1] <= data[m2]`.
    fn median_of_three(&mut self, m1: usize, m0: usize, m2: usize) {
        if self.less(m1, m0) {
            self.swap(m1, m0);
        }
        if self.less(m2, m1) {
            self.swap(m2, m1);
            if self.less(m1, m0) {
                self.swap(m1, m0);
            }
        }
    }

    fn do_pivot(&mut self, lo: usize, hi: usize) -> (usize, usize) {
        let m = (lo + hi) / 2;
        if hi - lo > 40 {
            // Tukey's ninther: the median of three medians of three.
            let s = (hi - lo) / 8;
            self.median_of_three(lo, lo + s, lo + 2 * s);
            self.median_of_three(m, m - s, m + s);
            self.median_of_three(hi - 1, hi - 1 - s, hi - 1 - 2 * s);
        }
        self.median_of_three(lo, m, hi - 1);

        let pivot = lo;
        let (mut a, mut c) = (lo + 1, hi - 1);
        while a < c && self.less(a, pivot) {
            a += 1;
        }
        let mut b = a;
        loop {
            while b < c && !self.less(pivot, b) {
                b += 1;
            }
            while b < c && self.less(pivot, c - 1) {
                c -= 1;
            }
            if b >= c {
                break;
            }
            self.swap(b, c - 1);
            b += 1;
            c -= 1;
        }
        // Few elements above the pivot hint at many equal to it.
        let mut protect = hi - c < 5;
        if !protect && hi - c < (hi - lo) / 4 {
            let mut dups = 0;
            if !self.less(pivot, hi - 1) {
                self.swap(c, hi - 1);
                c += 1;
                dups += 1;
            }
            if !self.less(b - 1, pivot) {
                b -= 1;
                dups += 1;
            }
            if !self.less(m, pivot) {
                self.swap(m, b - 1);
                b -= 1;
                dups += 1;
            }
            protect = dups > 1;
        }
        if protect {
            loop {
                while a < b && !self.less(b - 1, pivot) {
                    b -= 1;
                }
                while a < b && self.less(a, pivot) {
                    a += 1;
                }
                if a >= b {
                    break;
                }
                self.swap(a, b - 1);
                a += 1;
                b -= 1;
            }
        }
        self.swap(pivot, b - 1);
        (b - 1, c)
    }

    fn quick_sort(&mut self, mut a: usize, mut b: usize, mut max_depth: usize) {
        while b - a > 12 {
            if max_depth == 0 {
                self.heap_sort(a, b);
                return;
            }
            max_depth -= 1;
            let (mlo, mhi) = self.do_pivot(a, b);
            // Recursing on the smaller side bounds the stack.
            if mlo - a < b - mhi {
                self.quick_sort(a, mlo, max_depth);
                a = mhi;
            } else {
                self.quick_sort(mhi, b, max_depth);
                b = mlo;
            }
        }
        if b - a > 1 {
            // A shell-sort pass with gap 6, then insertion sort.
            for i in a + 6..b {
                if self.less(i, i - 6) {
                    self.swap(i, i - 6);
                }
            }
            self.insertion_sort(a, b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Versions of keys e00..e19 (in key order), as a conformance probe
    /// wrote them: all 1, but e03, e05, e11 and e17 at 2.
    fn versions() -> Vec<(usize, i64)> {
        (0..20)
            .map(|k| (k, if [3, 5, 11, 17].contains(&k) { 2 } else { 1 }))
            .collect()
    }

    fn keys(sorted: &[(usize, i64)]) -> Vec<usize> {
        sorted.iter().map(|&(k, _)| k).collect()
    }

    /// The orders etcd 3.5.1 returned for that range, sorted by version.
    #[test]
    fn ties_come_out_in_etcd_3_5_1s_order() {
        let mut ascending = versions();
        sort(&mut ascending, |a, b| a.1 < b.1);
        assert_eq!(
            keys(&ascending),
            [14, 1, 2, 18, 4, 16, 6, 7, 8, 9, 10, 15, 12, 13, 0, 19, 11, 5, 17, 3]
        );
        let mut descending = versions();
        sort(&mut descending, |a, b| b.1 < a.1);
        assert_eq!(
            keys(&descending),
            [5, 17, 11, 3, 0, 4, 6, 7, 8, 9, 10, 2, 12, 13, 14, 15, 16, 1, 18, 19]
        );
    }

    #[test]
    fn it_sorts() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for n in [0, 1, 2, 5, 12, 13, 41, 100, 1000] {
            let mut data: Vec<u64> = (0..n)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state % 50
                })
                .collect();
            let mut expected = data.clone();
            expected.sort_unstable();
            sort(&mut data, |a, b| a < b);
            assert_eq!(data, expected, "n = {n}");
        }
    }
}
