//! Our own QR locator and module sampler, tried before rqrr's detector.
//!
//! Most of what rqrr spends on a large code (a receipt's JWS is version 15–16) is
//! refining its perspective by trial (`jiggle_perspective`), and its finder-pattern
//! search is not public. Here the code's geometry is measured instead of searched:
//! 1. finder patterns are runs of dark:light:dark:light:dark in the ratio 1:1:3:1:1 along
//!    a row, confirmed along the column through their centre; hits on neighbouring rows
//!    are merged into one centre;
//! 2. the three that form a right-angled corner give the orientation and, with their
//!    module size, the version, confirmed by the timing patterns between them;
//! 3. each alignment pattern is searched near where the current fit predicts it, nearest
//!    first, and every one found refines a least-squares fit (affine, then a homography
//!    once the points span the code), so even a 81-module code lands within a fraction of
//!    a module everywhere;
//! 4. every module's centre is read on the grey image, dark when it is past the middle
//!    of the crop's darkest and lightest levels (not Otsu's cut, which a light quiet zone
//!    pulls towards light: blurred light modules between dark ones read dark there), and
//!    rqrr decodes that grid (error correction, and the mirrored reading).
//!
//! Any step that fails returns nothing, and the caller falls back to rqrr's passes.

use image::GrayImage;

/// What [`read_codes`] found in one polarity of a crop.
#[derive(Debug, Default)]
pub(super) struct Located {
    /// The decoded texts, each once, in the order found.
    pub codes: Vec<String>,
    /// A confident finder pattern lies outside every decoded code: there may be a code
    /// this path could not read, so the caller should let rqrr look too.
    pub unexplained: bool,
}

/// The codes in `gray` read by our locator: dark is at or below `threshold` (above it
/// when `invert`, a dark-mode screen), as the Otsu form thresholds it.
pub(super) fn read_codes(gray: &GrayImage, threshold: u8, invert: bool) -> Located {
    let view = View::new(gray, threshold, invert);
    let finders = view.finders();
    let mut used = vec![false; finders.len()];
    let mut located = Located::default();
    let mut bounds: Vec<[Point; 4]> = Vec::new();
    for _ in 0..MAX_CODES {
        let mut decoded = false;
        for (corner, members) in corners(&finders, &used).into_iter().take(MAX_CORNER_TRIES) {
            if let Some((text, quad)) = view.read(&corner) {
                for member in members {
                    used[member] = true;
                }
                if !located.codes.contains(&text) {
                    located.codes.push(text);
                }
                bounds.push(quad);
                decoded = true;
                break;
            }
        }
        if !decoded {
            break;
        }
    }
    located.unexplained = finders
        .iter()
        .zip(&used)
        .any(|(finder, &used)| !used && finder.hits >= CONFIDENT_HITS && !bounds.iter().any(|quad| inside(quad, finder.centre)));
    located
}

/// Codes read from one crop at most (a frame rarely shows more than one).
const MAX_CODES: usize = 4;
/// Corner triples tried for each code, best-shaped first.
const MAX_CORNER_TRIES: usize = 4;
/// Rows a finder pattern must be seen on before it counts: one row of ratios is easily
/// matched by text or data modules.
const CONFIDENT_HITS: u32 = 3;
/// Finder candidates considered when pairing corners (most hits first).
const MAX_FINDERS: usize = 10;

/// A point in pixels (the centre of pixel (x, y) is (x + 0.5, y + 0.5)) or in modules
/// (the centre of module (column, row) is (column + 0.5, row + 0.5)).
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Point {
    pub x: f64,
    pub y: f64,
}

impl Point {
    fn new(x: f64, y: f64) -> Self {
        Point { x, y }
    }

    fn minus(self, other: Point) -> Point {
        Point::new(self.x - other.x, self.y - other.y)
    }

    fn length(self) -> f64 {
        self.x.hypot(self.y)
    }
}

/// A finder pattern's centre and module size (in pixels, along the row), and on how
/// many rows it was seen.
#[derive(Debug, Clone, Copy)]
struct Finder {
    centre: Point,
    module: f64,
    hits: u32,
}

/// The three finder patterns of one code, oriented: `top_right` is to the right of
/// `top_left` when the code is read upright (`bottom_left` below it).
#[derive(Debug, Clone, Copy)]
struct Corner {
    top_left: Finder,
    top_right: Finder,
    bottom_left: Finder,
}

/// The crop in one polarity: "ink" is how dark a pixel is (0–255, dark-mode screens
/// inverted). Finder patterns are searched on `dark`, the Otsu threshold's bitmap;
/// modules are read against `module_cut`.
struct View<'a> {
    gray: &'a GrayImage,
    width: usize,
    height: usize,
    invert: bool,
    /// How far the dark class's mean ink is above the light class's: the contrast an
    /// alignment pattern must show.
    span: i32,
    /// The ink a module's centre must reach to read dark: midway between the darkest
    /// and the lightest levels (the 2nd and 98th percentiles). Otsu's cut, and the
    /// classes' means, sit towards the light quiet zone, where a blurred light module
    /// between dark ones would read dark.
    module_cut: i32,
    dark: Vec<bool>,
}

impl<'a> View<'a> {
    fn new(gray: &'a GrayImage, threshold: u8, invert: bool) -> Self {
        let cut = if invert { i32::from(threshold) + 1 } else { 255 - i32::from(threshold) };
        let (mut sums, mut counts, mut histogram) = ([0i64; 2], [0i64; 2], [0usize; 256]);
        let dark: Vec<bool> = gray
            .as_raw()
            .iter()
            .map(|&pixel| {
                let ink = ink_of(pixel, invert);
                histogram[ink as usize] += 1;
                let dark = ink >= cut;
                sums[usize::from(dark)] += i64::from(ink);
                counts[usize::from(dark)] += 1;
                dark
            })
            .collect();
        let mean = |class: usize| if counts[class] == 0 { 0 } else { (sums[class] / counts[class]) as i32 };
        let (light, dark_mean) = (mean(0), mean(1));
        View {
            gray,
            width: gray.width() as usize,
            height: gray.height() as usize,
            invert,
            span: dark_mean - light,
            module_cut: (percentile(&histogram, 2) + percentile(&histogram, 98)) / 2,
            dark,
        }
    }

    fn ink(&self, x: usize, y: usize) -> i32 {
        ink_of(self.gray.as_raw()[y * self.width + x], self.invert)
    }

    /// The mean ink of the pixels within `radius` of the one containing `at`, or `None`
    /// outside the crop.
    fn ink_around(&self, at: Point, radius: usize) -> Option<i32> {
        if !(at.x >= 0.0 && at.y >= 0.0) {
            return None;
        }
        let (x, y) = (at.x as usize, at.y as usize);
        if x >= self.width || y >= self.height {
            return None;
        }
        let (x0, y0) = (x.saturating_sub(radius), y.saturating_sub(radius));
        let (x1, y1) = ((x + radius).min(self.width - 1), (y + radius).min(self.height - 1));
        let (mut sum, mut count) = (0, 0);
        for y in y0..=y1 {
            for x in x0..=x1 {
                sum += self.ink(x, y);
                count += 1;
            }
        }
        Some(sum / count)
    }

    /// Finder pattern candidates, most often seen first. A frame crowded with finder-like
    /// shapes (a hostile upload tiled with them) stops being scanned after
    /// [`MAX_SIGHTINGS`]: each sighting is compared with every candidate kept so far.
    fn finders(&self) -> Vec<Finder> {
        let mut found: Vec<Finder> = Vec::new();
        let mut runs: Vec<(usize, usize, bool)> = Vec::new();
        let mut sightings = 0;
        'rows: for y in 0..self.height {
            let row = &self.dark[y * self.width..(y + 1) * self.width];
            runs.clear();
            let mut start = 0;
            for x in 1..=row.len() {
                if x == row.len() || row[x] != row[start] {
                    runs.push((start, x - start, row[start]));
                    start = x;
                }
            }
            for window in runs.windows(5) {
                if !window[0].2 {
                    continue;
                }
                let lengths = [window[0].1, window[1].1, window[2].1, window[3].1, window[4].1];
                if !finder_ratios(lengths) {
                    continue;
                }
                let across: usize = lengths.iter().sum();
                let x = window[2].0 + window[2].1 / 2;
                let column = |row: usize| self.dark[row * self.width + x];
                let Some((centre_y, down)) = cross_check(column, self.height, y, across) else { continue };
                let row_at = centre_y as usize;
                let line = |column: usize| self.dark[row_at * self.width + column];
                let Some((centre_x, across)) = cross_check(line, self.width, x, down) else { continue };
                let module = (across + down) as f64 / 14.0;
                merge(&mut found, Finder { centre: Point::new(centre_x, centre_y), module, hits: 1 });
                sightings += 1;
                if sightings >= MAX_SIGHTINGS {
                    break 'rows;
                }
            }
        }
        found.sort_by_key(|finder| std::cmp::Reverse(finder.hits));
        found
    }

    /// Reads the code whose finder patterns are `corner`: its text and its outline in
    /// pixels.
    fn read(&self, corner: &Corner) -> Option<(String, [Point; 4])> {
        for version in self.versions(corner) {
            let size = 17 + 4 * version;
            let fit = self.fit(corner, version)?;
            let grid = self.sample(&fit, size);
            if let Ok((_, text)) = rqrr::Grid::new(grid).decode() {
                let s = size as f64;
                let quad = [fit.map(0.0, 0.0), fit.map(s, 0.0), fit.map(s, s), fit.map(0.0, s)];
                return Some((text, quad));
            }
        }
        None
    }

    /// The likely versions: from the finders' distance over their module size, then the
    /// neighbouring versions, kept when the timing patterns between the finders alternate
    /// as that version's size makes them, best first.
    fn versions(&self, corner: &Corner) -> Vec<usize> {
        let across = corner.top_right.centre.minus(corner.top_left.centre);
        let down = corner.bottom_left.centre.minus(corner.top_left.centre);
        // A row crosses a finder rotated by θ over 1/cos θ of its width.
        let angle = across.y.atan2(across.x);
        let quarter = std::f64::consts::FRAC_PI_2;
        let tilt = angle - quarter * (angle / quarter).round();
        let module = (corner.top_left.module + corner.top_right.module + corner.bottom_left.module) / 3.0 * tilt.cos();
        let modules = (across.length() + down.length()) / 2.0 / module + 7.0;
        let estimate = ((modules - 17.0) / 4.0).round().clamp(1.0, 40.0) as usize;
        let mut scored: Vec<(f64, usize)> = (estimate.saturating_sub(2).max(1)..=(estimate + 2).min(40))
            .map(|version| (self.timing_score(&Fit::from_corner(corner, 17 + 4 * version), 17 + 4 * version), version))
            .filter(|(score, _)| *score >= 0.75)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0));
        scored.into_iter().take(2).map(|(_, version)| version).collect()
    }

    /// The share of timing modules (row 6 and column 6 between the finders) that
    /// alternate dark and light as they should.
    fn timing_score(&self, fit: &Fit, size: usize) -> f64 {
        let mut right = 0;
        for k in 8..size - 8 {
            let expect = k % 2 == 0;
            right += usize::from(self.module_dark(fit, k, 6, 0) == expect);
            right += usize::from(self.module_dark(fit, 6, k, 0) == expect);
        }
        right as f64 / (2 * (size - 16)) as f64
    }

    fn module_dark(&self, fit: &Fit, column: usize, row: usize, radius: usize) -> bool {
        let at = fit.map(column as f64 + 0.5, row as f64 + 0.5);
        self.ink_around(at, radius).is_some_and(|ink| ink >= self.module_cut)
    }

    /// The module-to-pixel mapping of a `version` code at `corner`: the finders, then
    /// every alignment pattern found near its predicted place, least squares.
    fn fit(&self, corner: &Corner, version: usize) -> Option<Fit> {
        let size = 17 + 4 * version;
        let s = size as f64;
        let mut pairs = vec![
            (Point::new(3.5, 3.5), corner.top_left.centre),
            (Point::new(s - 3.5, 3.5), corner.top_right.centre),
            (Point::new(3.5, s - 3.5), corner.bottom_left.centre),
        ];
        let mut fit = Fit::from_corner(corner, size);
        let centres = alignment_centres(version);
        let last = centres.last().copied().unwrap_or(0);
        let mut patterns: Vec<(usize, usize)> = centres
            .iter()
            .flat_map(|&row| centres.iter().map(move |&column| (column, row)))
            .filter(|&pair| pair != (6, 6) && pair != (6, last) && pair != (last, 6))
            .collect();
        // Nearest the finders first: each found pattern sharpens the next prediction.
        patterns.sort_by_key(|&(column, row)| column.max(row) * 4 + column.min(row));
        for (column, row) in patterns {
            let expected = Point::new(column as f64 + 0.5, row as f64 + 0.5);
            if let Some(found) = self.alignment_near(&fit, expected) {
                pairs.push((expected, found));
                fit = Fit::least_squares(&pairs, version).unwrap_or(fit);
            }
        }
        Some(fit)
    }

    /// The centre of the alignment pattern predicted at module point `expected`, searched
    /// within 1.5 modules of the prediction, or `None` without a clear one.
    fn alignment_near(&self, fit: &Fit, expected: Point) -> Option<Point> {
        let centre = fit.map(expected.x, expected.y);
        let step_x = fit.map(expected.x + 1.0, expected.y).minus(centre);
        let step_y = fit.map(expected.x, expected.y + 1.0).minus(centre);
        let module = (step_x.length() + step_y.length()) / 2.0;
        // A degenerate fit can map far outside any frame (the pixel arithmetic below
        // must not overflow).
        let inside = |value: f64| value.abs() < 1e7;
        if !(1.0..=64.0).contains(&module) || !inside(centre.x) || !inside(centre.y) {
            return None;
        }
        // The 25 module centres of the pattern relative to its centre, in pixels, and
        // whether each is dark (outer ring and centre) or light (inner ring).
        let mut offsets = Vec::with_capacity(25);
        for j in -2i32..=2 {
            for i in -2i32..=2 {
                let ring = i.abs().max(j.abs());
                let offset =
                    Point::new(f64::from(i) * step_x.x + f64::from(j) * step_y.x, f64::from(i) * step_x.y + f64::from(j) * step_y.y);
                offsets.push((offset, ring));
            }
        }
        let reach = (1.5 * module).ceil() as i64;
        let (cx, cy) = (centre.x.floor() as i64, centre.y.floor() as i64);
        let mut scores = Vec::with_capacity(((2 * reach + 1) * (2 * reach + 1)) as usize);
        for dy in -reach..=reach {
            for dx in -reach..=reach {
                let (x, y) = ((cx + dx) as f64 + 0.5, (cy + dy) as f64 + 0.5);
                let score = self.alignment_score(Point::new(x, y), &offsets)?;
                scores.push((score, x, y));
            }
        }
        let best = scores.iter().map(|(score, ..)| *score).max()?;
        if best * 5 < self.span * 2 {
            return None;
        }
        // The middle of the plateau of best scores (a module wider than a pixel gives
        // several equal ones).
        let near_best: Vec<_> = scores.iter().filter(|(score, ..)| *score * 20 >= best * 19).collect();
        let n = near_best.len() as f64;
        Some(Point::new(near_best.iter().map(|(_, x, _)| x).sum::<f64>() / n, near_best.iter().map(|(_, _, y)| y).sum::<f64>() / n))
    }

    /// How much an alignment pattern centred at `at` looks like one: the dark centre and
    /// outer ring's ink over the light inner ring's, or `None` if it leaves the crop.
    fn alignment_score(&self, at: Point, offsets: &[(Point, i32)]) -> Option<i32> {
        let (mut dark, mut light, mut centre) = (0, 0, 0);
        for &(offset, ring) in offsets {
            let (x, y) = (at.x + offset.x, at.y + offset.y);
            if x < 0.0 || y < 0.0 || x >= self.width as f64 || y >= self.height as f64 {
                return None;
            }
            let ink = self.ink(x as usize, y as usize);
            match ring {
                0 => centre = ink,
                1 => light += ink,
                _ => dark += ink,
            }
        }
        Some(dark / 16 + centre - light / 4)
    }

    /// Every module read at its centre: dark when the ink around the centre (a 3×3
    /// pixel neighbourhood once modules are large enough) reaches `module_cut`.
    fn sample(&self, fit: &Fit, size: usize) -> rqrr::SimpleGrid {
        let s = size as f64;
        let module = fit.map(s / 2.0 + 1.0, s / 2.0).minus(fit.map(s / 2.0, s / 2.0)).length();
        let radius = usize::from(module >= 4.5);
        rqrr::SimpleGrid::from_func(size, |column, row| self.module_dark(fit, column, row, radius))
    }
}

/// How dark `pixel` is, 0–255 (light on dark when `invert`: a dark-mode screen).
fn ink_of(pixel: u8, invert: bool) -> i32 {
    if invert {
        i32::from(pixel)
    } else {
        255 - i32::from(pixel)
    }
}

/// The ink below which `percent` of the pixels lie.
fn percentile(histogram: &[usize; 256], percent: usize) -> i32 {
    let total: usize = histogram.iter().sum();
    let mut below = 0;
    for (ink, &count) in histogram.iter().enumerate() {
        below += count;
        if below * 100 >= total * percent {
            return ink as i32;
        }
    }
    255
}

/// Whether five run lengths (dark first) are in the finder pattern's 1:1:3:1:1, loosely:
/// a threshold of a blurred image shifts the edges by up to half a module.
fn finder_ratios(lengths: [usize; 5]) -> bool {
    let total: usize = lengths.iter().sum();
    if total < 7 {
        return false;
    }
    let unit = total as f64 / 7.0;
    let near = |length: usize, modules: f64, slack: f64| (length as f64 - modules * unit).abs() <= slack * unit;
    near(lengths[0], 1.0, 0.6)
        && near(lengths[1], 1.0, 0.6)
        && near(lengths[2], 3.0, 1.2)
        && near(lengths[3], 1.0, 0.6)
        && near(lengths[4], 1.0, 0.6)
}

/// Measures the five runs through `start` (inside the dark centre) along one line of
/// `length` pixels: the centre of the middle run and the total, when they are finder
/// ratios and the total is within a factor 2 of `expected`.
fn cross_check(dark: impl Fn(usize) -> bool, length: usize, start: usize, expected: usize) -> Option<(f64, usize)> {
    if !dark(start) {
        return None;
    }
    let limit = expected * 2;
    let run = |from: isize, step: isize, want: bool| {
        let mut count = 0;
        let mut at = from;
        while at >= 0 && (at as usize) < length && dark(at as usize) == want && count <= limit {
            count += 1;
            at += step;
        }
        count
    };
    let start = start as isize;
    let centre_back = run(start, -1, true);
    let light_back = run(start - centre_back as isize, -1, false);
    let dark_back = run(start - (centre_back + light_back) as isize, -1, true);
    let centre_on = run(start + 1, 1, true);
    let light_on = run(start + 1 + centre_on as isize, 1, false);
    let dark_on = run(start + 1 + (centre_on + light_on) as isize, 1, true);
    let lengths = [dark_back, light_back, centre_back + centre_on, light_on, dark_on];
    let total: usize = lengths.iter().sum();
    if lengths.iter().any(|&length| length == 0 || length > limit) || total * 2 < expected || total > expected * 2 {
        return None;
    }
    if !finder_ratios(lengths) {
        return None;
    }
    let first = start as usize + 1 - centre_back;
    Some((first as f64 + (centre_back + centre_on) as f64 / 2.0, total))
}

/// The most finder sightings one frame is scanned for (a real code gives a few dozen
/// per finder; 8,192 × 512 candidates bounds the merging at a few million comparisons).
const MAX_SIGHTINGS: usize = 8_192;

/// Adds a sighting to the candidate it repeats (within two of its modules, of a similar
/// size), or as a new candidate.
fn merge(found: &mut Vec<Finder>, sighting: Finder) {
    let same = found.iter().position(|finder| {
        let reach = 2.0 * finder.module.max(sighting.module);
        let apart = finder.centre.minus(sighting.centre);
        let close = apart.x.abs() <= reach && apart.y.abs() <= reach && apart.length() <= reach;
        let ratio = finder.module / sighting.module;
        close && (0.6..=1.67).contains(&ratio)
    });
    match same {
        Some(index) => {
            let finder = &mut found[index];
            let hits = f64::from(finder.hits);
            let weighted = |old: f64, new: f64| (old * hits + new) / (hits + 1.0);
            finder.centre = Point::new(weighted(finder.centre.x, sighting.centre.x), weighted(finder.centre.y, sighting.centre.y));
            finder.module = weighted(finder.module, sighting.module);
            finder.hits += 1;
        }
        None if found.len() < 512 => found.push(sighting),
        None => {}
    }
}

/// The triples of unused confident finders that form a code's corner (a right angle,
/// legs of equal length, modules of equal size, at least 21 modules), best-shaped first,
/// with the indices of their members.
fn corners(finders: &[Finder], used: &[bool]) -> Vec<(Corner, [usize; 3])> {
    let pool: Vec<usize> = (0..finders.len()).filter(|&i| !used[i] && finders[i].hits >= CONFIDENT_HITS).take(MAX_FINDERS).collect();
    let mut found = Vec::new();
    for (a, &i) in pool.iter().enumerate() {
        for (b, &j) in pool.iter().enumerate().skip(a + 1) {
            for &k in pool.iter().skip(b + 1) {
                if let Some((score, corner)) = corner_of([finders[i], finders[j], finders[k]]) {
                    found.push((score, corner, [i, j, k]));
                }
            }
        }
    }
    found.sort_by(|a, b| a.0.total_cmp(&b.0));
    found.into_iter().map(|(_, corner, members)| (corner, members)).collect()
}

/// The three finders as an oriented corner and how far from a perfect one (lower is
/// better), or `None` when they cannot be one code's.
fn corner_of(three: [Finder; 3]) -> Option<(f64, Corner)> {
    let side = |a: usize, b: usize| three[a].centre.minus(three[b].centre).length();
    // The corner is opposite the longest side.
    let opposite = [side(1, 2), side(0, 2), side(0, 1)];
    let corner = (0..3).max_by(|&a, &b| opposite[a].total_cmp(&opposite[b]))?;
    let (top_left, mut first, mut second) = (three[corner], three[(corner + 1) % 3], three[(corner + 2) % 3]);
    let (mut across, mut down) = (first.centre.minus(top_left.centre), second.centre.minus(top_left.centre));
    // Clockwise on screen (y down): the top right, then the bottom left.
    if across.x * down.y - across.y * down.x < 0.0 {
        std::mem::swap(&mut first, &mut second);
        std::mem::swap(&mut across, &mut down);
    }
    let (a, b) = (across.length(), down.length());
    let cosine = (across.x * down.x + across.y * down.y) / (a * b);
    let modules = [top_left.module, first.module, second.module];
    let (small, large) = modules.iter().fold((f64::MAX, 0.0f64), |(small, large), &m| (small.min(m), large.max(m)));
    let legs = (a / b).ln().abs();
    let sizes = (large / small).ln();
    // Legs at most ~40% apart and 66–114°: a strong perspective still passes.
    if legs > 0.35 || cosine.abs() > 0.4 || sizes > 0.5 || a.min(b) < 12.0 * small {
        return None;
    }
    Some((legs + cosine.abs() + sizes / 2.0, Corner { top_left, top_right: first, bottom_left: second }))
}

/// Whether `point` lies inside the convex quadrilateral `quad` (either winding).
fn inside(quad: &[Point; 4], point: Point) -> bool {
    let sides: Vec<f64> = (0..4)
        .map(|i| {
            let (a, b) = (quad[i], quad[(i + 1) % 4]);
            (b.x - a.x) * (point.y - a.y) - (b.y - a.y) * (point.x - a.x)
        })
        .collect();
    sides.iter().all(|&side| side >= 0.0) || sides.iter().all(|&side| side <= 0.0)
}

/// The rows (and columns) of a version's alignment pattern centres: 6, then evenly
/// spaced (an even step) back from `size - 7`; version 32's step is 26 by the standard's
/// table rather than the rule.
fn alignment_centres(version: usize) -> Vec<usize> {
    if version < 2 {
        return Vec::new();
    }
    let size = 17 + 4 * version;
    let count = version / 7 + 2;
    let step = if version == 32 { 26 } else { (version * 4 + count * 2 + 1) / (count * 2 - 2) * 2 };
    let mut centres: Vec<usize> = (0..count - 1).map(|i| size - 7 - i * step).collect();
    centres.push(6);
    centres.reverse();
    centres
}

/// A mapping from module coordinates to pixels: a homography (an affine map when its
/// last row is 0, 0, 1).
#[derive(Debug, Clone, Copy)]
struct Fit {
    matrix: [[f64; 3]; 3],
}

impl Fit {
    /// The affine map that puts the three finder centres where they were found.
    fn from_corner(corner: &Corner, size: usize) -> Fit {
        let span = size as f64 - 7.0;
        let origin = corner.top_left.centre;
        let across = corner.top_right.centre.minus(origin);
        let down = corner.bottom_left.centre.minus(origin);
        let (ux, uy) = (across.x / span, across.y / span);
        let (vx, vy) = (down.x / span, down.y / span);
        // pixel = origin + (u - 3.5) · across/span + (v - 3.5) · down/span
        Fit { matrix: [[ux, vx, origin.x - 3.5 * (ux + vx)], [uy, vy, origin.y - 3.5 * (uy + vy)], [0.0, 0.0, 1.0]] }
    }

    fn map(&self, u: f64, v: f64) -> Point {
        let m = &self.matrix;
        let w = m[2][0] * u + m[2][1] * v + m[2][2];
        Point::new((m[0][0] * u + m[0][1] * v + m[0][2]) / w, (m[1][0] * u + m[1][1] * v + m[1][2]) / w)
    }

    /// The least-squares fit of module points to pixels: affine until the points are
    /// spread over the code (a homography from points nearly on one line is wild), a
    /// homography after.
    fn least_squares(pairs: &[(Point, Point)], version: usize) -> Option<Fit> {
        let spread = pairs.len() >= 4 && (version < 7 || pairs.len() >= 7);
        // Normalise both sides (centred, unit spread) so the equations are well scaled.
        let normaliser = |points: &mut dyn Iterator<Item = Point>| {
            let points: Vec<Point> = points.collect();
            let n = points.len() as f64;
            let (mx, my) = (points.iter().map(|p| p.x).sum::<f64>() / n, points.iter().map(|p| p.y).sum::<f64>() / n);
            let scale = points.iter().map(|p| (p.x - mx).hypot(p.y - my)).sum::<f64>() / n;
            (mx, my, if scale > 0.0 { scale } else { 1.0 })
        };
        let (mu, mv, su) = normaliser(&mut pairs.iter().map(|(module, _)| *module));
        let (mx, my, sx) = normaliser(&mut pairs.iter().map(|(_, pixel)| *pixel));
        let unknowns = if spread { 8 } else { 6 };
        let mut normal = [[0.0f64; 9]; 8];
        for (module, pixel) in pairs {
            let (u, v) = ((module.x - mu) / su, (module.y - mv) / su);
            let (x, y) = ((pixel.x - mx) / sx, (pixel.y - my) / sx);
            // x = (h0 u + h1 v + h2) / (h6 u + h7 v + 1), y likewise with h3, h4, h5.
            let rows: [([f64; 8], f64); 2] =
                [([u, v, 1.0, 0.0, 0.0, 0.0, -u * x, -v * x], x), ([0.0, 0.0, 0.0, u, v, 1.0, -u * y, -v * y], y)];
            for (row, target) in rows {
                for i in 0..unknowns {
                    for j in 0..unknowns {
                        normal[i][j] += row[i] * row[j];
                    }
                    normal[i][8] += row[i] * target;
                }
            }
        }
        let h = solve(&mut normal, unknowns)?;
        let (h6, h7) = if spread { (h[6], h[7]) } else { (0.0, 0.0) };
        let inner = [[h[0], h[1], h[2]], [h[3], h[4], h[5]], [h6, h7, 1.0]];
        // pixel = denormalise(inner(normalise(module)))
        let to_normal = [[1.0 / su, 0.0, -mu / su], [0.0, 1.0 / su, -mv / su], [0.0, 0.0, 1.0]];
        let from_normal = [[sx, 0.0, mx], [0.0, sx, my], [0.0, 0.0, 1.0]];
        let matrix = multiply(&multiply(&from_normal, &inner), &to_normal);
        matrix.iter().flatten().all(|value| value.is_finite()).then_some(Fit { matrix })
    }
}

fn multiply(a: &[[f64; 3]; 3], b: &[[f64; 3]; 3]) -> [[f64; 3]; 3] {
    let mut product = [[0.0; 3]; 3];
    for (i, row) in product.iter_mut().enumerate() {
        for (j, cell) in row.iter_mut().enumerate() {
            *cell = (0..3).map(|k| a[i][k] * b[k][j]).sum();
        }
    }
    product
}

/// Solves the first `n` equations of the augmented system (column 8 the right-hand
/// side) by Gaussian elimination with partial pivoting; `None` when singular.
fn solve(system: &mut [[f64; 9]; 8], n: usize) -> Option<[f64; 8]> {
    for column in 0..n {
        let pivot = (column..n).max_by(|&a, &b| system[a][column].abs().total_cmp(&system[b][column].abs()))?;
        if system[pivot][column].abs() < 1e-12 {
            return None;
        }
        system.swap(column, pivot);
        let pivot_row = system[column];
        for (index, row) in system.iter_mut().enumerate().take(n) {
            let factor = row[column] / pivot_row[column];
            if index != column && factor != 0.0 {
                for (cell, pivot_cell) in row.iter_mut().zip(pivot_row).skip(column) {
                    *cell -= factor * pivot_cell;
                }
            }
        }
    }
    let mut solution = [0.0; 8];
    for (i, value) in solution.iter_mut().enumerate().take(n) {
        *value = system[i][8] / system[i][i];
    }
    Some(solution)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{imageops, Luma};
    use posbridge_testkit::images::{qr_frame, rotated};

    const TEXT: &str = "tx_R60D21hL60bj5N1v and some more text so the code has a few versions' worth of modules";

    fn otsu(gray: &GrayImage) -> u8 {
        super::super::otsu_threshold(gray)
    }

    fn read(gray: &GrayImage, invert: bool) -> Located {
        read_codes(gray, otsu(gray), invert)
    }

    #[test]
    fn a_rotated_blurred_code_is_read_by_this_path_alone() {
        let frame = imageops::blur(&rotated(&qr_frame(TEXT, 5), 23.0), 1.2);
        let located = read(&frame, false);
        assert_eq!(located.codes, [TEXT]);
        assert!(!located.unexplained);
    }

    #[test]
    fn a_large_version_with_many_alignment_patterns_is_read() {
        // Version 15 or so, like a receipt's signed token.
        let text: String = (0..400).map(|i| char::from(b'a' + (i * 7 % 26) as u8)).collect();
        let frame = rotated(&qr_frame(&text, 4), -9.0);
        assert_eq!(read(&frame, false).codes, [text]);
    }

    #[test]
    fn a_strongly_blurred_receipt_sized_code_is_read() {
        // 436 characters, like a signed receipt: version 16, 6 px modules, σ = 2.5.
        let text: String = (0..436u32)
            .map(|i| char::from(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"[(i * 37 % 64) as usize]))
            .collect();
        let frame = imageops::blur(&qr_frame(&text, 6), 2.5);
        assert_eq!(read(&frame, false).codes, [text]);
    }

    #[test]
    fn a_dark_mode_code_is_read_in_its_polarity_only() {
        let mut frame = qr_frame(TEXT, 6);
        imageops::invert(&mut frame);
        assert_eq!(read(&frame, true).codes, [TEXT]);
        assert!(read(&frame, false).codes.is_empty());
    }

    #[test]
    fn a_mirrored_code_is_read() {
        let frame = imageops::flip_horizontal(&qr_frame(TEXT, 6));
        assert_eq!(read(&frame, false).codes, [TEXT]);
    }

    #[test]
    fn a_blank_or_noisy_frame_gives_nothing() {
        let blank = GrayImage::from_pixel(640, 480, Luma([200]));
        let located = read(&blank, false);
        assert!(located.codes.is_empty() && !located.unexplained, "{located:?}");
        // Stripes and checks have contrast but no finder triple.
        let stripes = GrayImage::from_fn(640, 480, |x, y| Luma([if (x / 7 + y / 11) % 2 == 0 { 30 } else { 220 }]));
        assert!(read(&stripes, false).codes.is_empty());
    }

    #[test]
    fn a_frame_tiled_with_finder_patterns_is_scanned_within_its_bound_and_gives_nothing() {
        // 1-px modules, a finder every 9 px: ~12,000 finders, far more sightings than
        // the scan takes (a hostile upload).
        let tile = |x: u32, y: u32| {
            let (x, y) = ((x % 9) as i32 - 3, (y % 9) as i32 - 3);
            let ring = x.abs().max(y.abs());
            ring <= 3 && ring != 2
        };
        let frame = GrayImage::from_fn(1024, 1024, |x, y| Luma([if tile(x, y) { 20 } else { 230 }]));
        let located = read(&frame, false);
        assert!(located.codes.is_empty(), "{located:?}");
        assert!(located.unexplained, "finder-like shapes no code explains send the frame to the other passes");
    }

    #[test]
    fn a_lone_finder_pattern_is_reported_unexplained() {
        // Half a code: the top two finders cannot form a corner, yet they look like a code.
        let mut frame = qr_frame(TEXT, 6);
        for y in 360..720 {
            for x in 0..1280 {
                frame.put_pixel(x, y, Luma([235]));
            }
        }
        let located = read(&frame, false);
        assert!(located.codes.is_empty());
        assert!(located.unexplained, "{located:?}");
    }

    #[test]
    fn two_codes_are_both_read() {
        let left = qr_frame(TEXT, 3);
        let right = qr_frame("the second code", 4);
        let frame = GrayImage::from_fn(1280, 720, |x, y| if x < 640 { *left.get_pixel(x + 320, y) } else { *right.get_pixel(x - 320, y) });
        let mut codes = read(&frame, false).codes;
        codes.sort();
        assert_eq!(codes, ["the second code", TEXT]);
    }

    #[test]
    fn alignment_centres_match_codes_of_every_version() {
        assert_eq!(alignment_centres(1), Vec::<usize>::new());
        assert_eq!(alignment_centres(2), [6, 18]);
        assert_eq!(alignment_centres(7), [6, 22, 38]);
        assert_eq!(alignment_centres(32), [6, 34, 60, 86, 112, 138]);
        assert_eq!(alignment_centres(40), [6, 30, 58, 86, 114, 142, 170]);
        for version in 2..=40 {
            let code = qrcode::QrCode::with_version(b"x", qrcode::Version::Normal(version as i16), qrcode::EcLevel::L).unwrap();
            let (width, colors) = (code.width(), code.to_colors());
            let dark = |x: usize, y: usize| colors[y * width + x] == qrcode::Color::Dark;
            let centres = alignment_centres(version);
            assert_eq!(width, 17 + 4 * version);
            for &row in &centres {
                for &column in &centres {
                    let last = *centres.last().unwrap();
                    if (row, column) == (6, 6) || (row, column) == (6, last) || (row, column) == (last, 6) {
                        continue; // under a finder pattern
                    }
                    // Dark centre, light ring, dark ring.
                    assert!(dark(column, row), "version {version} at {column},{row}");
                    assert!(!dark(column + 1, row + 1) && !dark(column - 1, row), "version {version} at {column},{row}");
                    assert!(dark(column + 2, row - 2) && dark(column - 2, row + 1), "version {version} at {column},{row}");
                }
            }
        }
    }

    #[test]
    fn a_homography_fit_reproduces_its_points() {
        let truth = Fit { matrix: [[5.0, 0.8, 100.0], [-0.6, 4.5, 60.0], [0.0008, -0.0005, 1.0]] };
        let pairs: Vec<(Point, Point)> =
            [(3.5, 3.5), (70.5, 3.5), (3.5, 70.5), (66.5, 66.5), (38.5, 6.5), (6.5, 38.5), (38.5, 38.5), (38.5, 66.5)]
                .into_iter()
                .map(|(u, v)| (Point::new(u, v), truth.map(u, v)))
                .collect();
        let fit = Fit::least_squares(&pairs, 15).unwrap();
        for (u, v) in [(0.0, 0.0), (77.0, 77.0), (20.0, 50.0)] {
            let (want, got) = (truth.map(u, v), fit.map(u, v));
            assert!(want.minus(got).length() < 1e-6, "{want:?} {got:?}");
        }
    }
}
