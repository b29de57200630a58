//! Filler prose: paragraphs about invented places on a dozen topics, each
//! sentence drawn from a topic's templates with its slots filled at random.
//! Varied enough that a small model cannot learn to skip it, plain enough
//! that it never states one of the facts a task asks about.

use crate::rng::Rng;

const SYLLABLES_A: &[&str] = &[
    "Sel", "Tor", "Brel", "Quen", "Ash", "Wyn", "Har", "Cal", "Dun", "Mar", "Ever", "Lin", "Ros",
    "Ald", "Fen", "Gar", "Hol", "Kes", "Nor", "Pen", "Stan", "Thorn", "Ul", "Wick",
];
const SYLLABLES_B: &[&str] = &[
    "field", "ford", "thorpe", "wick", "bury", "mouth", "dale", "stead", "combe", "ley", "haven",
    "moor", "gate", "well", "brook", "ham", "ton", "by",
];
const RIVERS: &[&str] = &[
    "Wyle", "Arun", "Tamar", "Ouse", "Lune", "Esk", "Frome", "Calder", "Dove", "Nidd", "Tees",
    "Eden",
];
/// First names of the people in `rag` facts (filler prose names nobody).
pub const FIRST_NAMES: &[&str] = &[
    "Anna", "Bruno", "Clara", "David", "Elena", "Felix", "Greta", "Hugo", "Ines", "Jonas", "Karin",
    "Luca", "Maya", "Nils", "Olga", "Pavel", "Rosa", "Stefan", "Tara", "Viktor", "Wanda", "Yusuf",
    "Zofia", "Omar", "Lena", "Marco", "Sofia", "Tomas", "Alma", "Emil",
];
/// Family names.
pub const LAST_NAMES: &[&str] = &[
    "Hartmann",
    "Moreau",
    "Novak",
    "Lindqvist",
    "Okafor",
    "Tanaka",
    "Ferreira",
    "Kowalski",
    "Brennan",
    "Rossi",
    "Jansen",
    "Petrov",
    "Alvarez",
    "Nakamura",
    "Schulz",
    "Dubois",
    "Costa",
    "Berg",
    "Horvat",
    "Keller",
    "Marsh",
    "Quinn",
    "Sato",
    "Varga",
];
const MONTHS: &[&str] = &[
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: &[&str] = &[
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];
const CROPS: &[&str] = &[
    "apples", "pears", "barley", "hops", "plums", "potatoes", "cherries", "walnuts", "oats",
    "beans",
];
const ANIMALS: &[&str] = &[
    "herons",
    "otters",
    "eagles",
    "foxes",
    "deer",
    "owls",
    "swans",
    "badgers",
    "kingfishers",
    "hares",
];
const MATERIALS: &[&str] = &[
    "granite",
    "red brick",
    "limestone",
    "timber",
    "sandstone",
    "slate",
];

/// A topic: how its first sentence introduces the place, and what may follow.
struct Topic {
    opening: &'static [&'static str],
    body: &'static [&'static str],
}

const TOPICS: &[Topic] = &[
    Topic {
        opening: &["Mount {Place} rises about {nnn} meters above sea level and dominates the view from {other}."],
        body: &[
            "The first recorded ascent was made in {year} by a team of local shepherds and a visiting painter.",
            "{Animals} can often be seen near the ridge early in the morning.",
            "The most popular route starts at a car park above {other} and takes about {n} hours.",
            "Snow usually lingers on the northern face until the middle of {month}.",
            "Geologists believe the mountain was shaped by glaciers during the last ice age.",
            "Its lower slopes are covered with oak forest, while the summit is bare rock.",
            "Local legends claim that a lost silver mine lies somewhere beneath the eastern cliffs.",
            "A mountain hut with {n} beds offers shelter to climbers during autumn.",
            "Rescue teams remind hikers that fog can descend very quickly in {month}.",
            "In clear weather the {river} valley and the distant coast can be seen from the top.",
        ],
    },
    Topic {
        opening: &["{Place} is a quiet town in the {region} part of the country.", "The town of {Place} lies on the banks of the {river} river."],
        body: &[
            "The local school was rebuilt after a fire in {year} and now teaches about {nn} pupils.",
            "The town was founded in {year} by wool merchants travelling from {other}.",
            "A weekly market is held in the main square every {day}.",
            "Most houses in the old quarter are built of {material} with steep slate roofs.",
            "The population has grown slowly and is now close to {nnn} people.",
            "A narrow stone bridge connects the town with the road to {other}.",
            "Many families still keep small orchards of {crop} behind their houses.",
            "The town hall clock has struck the hours without fail since {year}.",
            "Visitors often stop at the bakery near the church for its honey cake.",
            "In winter the streets are quiet, and most shops close early in the afternoon.",
        ],
    },
    Topic {
        opening: &["The {Place} autumn festival is one of the oldest celebrations in the {region} region."],
        body: &[
            "It began in {year} as a small fair where farmers traded livestock and smoked fish.",
            "Today it attracts around {nnn} visitors over three days.",
            "Musicians playing flutes lead a procession from the bell tower to the riverbank.",
            "Children compete in a boat race on the {river} river on the final afternoon.",
            "Volunteers spend weeks decorating the streets with lanterns and paper flags.",
            "A prize is awarded each year for the best {crop} grown in the district.",
            "Stalls along the main street sell grilled sausages and spiced wine late into the night.",
            "The closing evening ends with a bonfire and dancing in the square.",
            "Local historians give free walking tours that explain the origins of the celebration.",
            "The festival was cancelled only once, in {year}, because of a severe storm.",
        ],
    },
    Topic {
        opening: &["The {river} river runs for about {nn} kilometers before it reaches the sea near {Place}."],
        body: &[
            "Its upper course cuts through a deep gorge lined with pine trees.",
            "{Animals} nest along the reed beds of the lower valley.",
            "Barges once carried coal and timber down to the harbor at {other}.",
            "A series of {n} old mills still stands along the western bank.",
            "The river floods most years in {month}, covering the meadows for several days.",
            "Anglers come from far away to fish for trout in the clear upper pools.",
            "A footpath follows the water for most of its length and is popular with walkers.",
            "The last ferry across the river stopped running in {year}, when the new bridge opened.",
            "In dry summers the water level falls low enough to reveal old wooden piers.",
        ],
    },
    Topic {
        opening: &["The public library of {Place} occupies a {material} building on the corner of the market square."],
        body: &[
            "It was opened in {year} with a gift of books from a retired sea captain.",
            "Its collection has grown to more than {nnn} volumes, including rare maps of the coast.",
            "A reading room on the top floor looks out over the roofs toward {other}.",
            "The library stays open late every {day} for students preparing for exams.",
            "Volunteers run a storytelling hour for young children each weekend.",
            "The oldest book in the collection is a handwritten almanac from the seventeenth century.",
            "A small café in the entrance hall serves tea and scones to visitors.",
            "The building was extended in {year} to make room for a local history archive.",
            "Each winter the library hosts a series of evening lectures on regional history.",
        ],
    },
    Topic {
        opening: &["The covered market of {Place} is busiest in the early hours of the morning."],
        body: &[
            "Traders arrive before dawn with carts full of {crop} and fresh cheese.",
            "The iron roof was built in {year} and restored after a storm damaged it.",
            "There are {nn} permanent stalls, and more are added during the summer.",
            "Fishmongers from {other} sell the morning catch near the eastern entrance.",
            "A bell rings at noon to mark the end of wholesale trading.",
            "Several families have run the same stall for more than four generations.",
            "The market is closed on {day}, when the hall is washed from end to end.",
            "Musicians often play near the fountain outside the main doors.",
            "Prices are still written by hand on small slate boards.",
        ],
    },
    Topic {
        opening: &["The railway line between {Place} and {other} was completed in {year}."],
        body: &[
            "It crosses the {river} river on a viaduct of {n} stone arches.",
            "Steam trains ran on the line until the last one was retired in {year}.",
            "The journey takes about {n} hours and passes through several tunnels.",
            "A preserved station building now houses a small museum of signals and lamps.",
            "Workers from across the region were hired to cut the long cutting near the coast.",
            "In {month} the line is sometimes closed when snow blocks the upper pass.",
            "The timetable has barely changed in decades, with trains leaving every two hours.",
            "Passengers can watch {animals} in the marshes from the carriage windows.",
        ],
    },
    Topic {
        opening: &["The lighthouse at {Place} stands on a rocky point at the mouth of the harbor."],
        body: &[
            "Its tower is {nn} meters tall and painted with broad white and red bands.",
            "The first lamp was lit in {year} after a series of shipwrecks on the reef.",
            "Keepers lived in the cottages at its base until the light was automated in {year}.",
            "On clear nights its beam can be seen from as far away as {other}.",
            "The stairway inside has {nn} steps, and visitors may climb it in summer.",
            "Storms in {month} sometimes send spray over the top of the gallery.",
            "A small museum next to the tower displays old lenses and logbooks.",
            "Seals often rest on the rocks below when the tide is low.",
        ],
    },
    Topic {
        opening: &["The museum of {Place} is housed in a former {material} warehouse near the docks."],
        body: &[
            "Its collection covers the history of fishing, shipbuilding and trade in the region.",
            "More than {nnn} objects are on display, from carved figureheads to brass instruments.",
            "The museum was founded in {year} by a society of local collectors.",
            "A special room tells the story of the great flood of {year}.",
            "School groups visit on most weekday mornings, especially on {day}.",
            "The museum shop sells prints of old maps and postcards of the harbor.",
            "Curators restore wooden boats in a workshop that visitors can watch through a glass wall.",
            "Entry is free on the first {day} of every month.",
        ],
    },
    Topic {
        opening: &["The orchards around {Place} cover the gentle hills south of the {river} river."],
        body: &[
            "Farmers there have grown {crop} for several centuries.",
            "Blossom usually appears in {month}, and the harvest begins in late summer.",
            "A cooperative founded in {year} buys most of the fruit and presses it into juice.",
            "About {nn} families still work the land, many of them on small plots.",
            "Old stone walls divide the fields and shelter the trees from the wind.",
            "{Animals} are common in the hedgerows between the rows of trees.",
            "The soil is light and sandy, which suits the older varieties best.",
            "Every autumn the village of {other} holds a tasting in its barn.",
        ],
    },
    Topic {
        opening: &["The old bridge at {Place} has carried travellers across the {river} river for centuries."],
        body: &[
            "It has {n} arches of {material} and a small chapel at its centre.",
            "Records show that tolls were collected there until {year}.",
            "The bridge was widened in {year} to allow carts to pass each other.",
            "A flood in {month} once swept away one of its arches, which was later rebuilt.",
            "From the middle of the bridge one can watch {animals} fishing in the shallows.",
            "Local couples traditionally cross it together on their wedding day.",
            "Cars have been banned from the bridge since a new road opened toward {other}.",
            "Lamps along its parapet are lit every evening at dusk.",
        ],
    },
    Topic {
        opening: &["The college at {Place} was established to train teachers for the villages of the region."],
        body: &[
            "Its first students arrived in {year}, travelling by coach from {other}.",
            "Today it has about {nnn} students and a staff of {nn} lecturers.",
            "The main hall is built of {material} and has a tall clock tower.",
            "A botanical garden behind the library grows more than {nn} kinds of herbs.",
            "Students row on the {river} river every {day} afternoon.",
            "The college choir performs a winter concert in the town church.",
            "An exchange programme sends students abroad for one term each year.",
            "The oldest building was once a monastery and still has its cloister.",
        ],
    },
];

const REGIONS: &[&str] = &["northern", "southern", "eastern", "western", "central"];

/// A capitalised invented place name.
pub fn place_name(rng: &mut Rng) -> String {
    format!("{}{}", rng.pick(SYLLABLES_A), rng.pick(SYLLABLES_B))
}

fn fill(template: &str, place: &str, rng: &mut Rng) -> String {
    let mut out = String::with_capacity(template.len() + 32);
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let slot = &rest[start + 1..start + len];
        let value = match slot {
            "Place" => place.to_string(),
            "other" => place_name(rng),
            "river" => rng.pick(RIVERS).to_string(),
            "region" => rng.pick(REGIONS).to_string(),
            "n" => rng.range(2, 12).to_string(),
            "nn" => rng.range(14, 480).to_string(),
            "nnn" => rng.range(1200, 9800).to_string(),
            "year" => rng.range(1710, 1985).to_string(),
            "month" => rng.pick(MONTHS).to_string(),
            "day" => rng.pick(DAYS).to_string(),
            "crop" => rng.pick(CROPS).to_string(),
            "animals" => rng.pick(ANIMALS).to_string(),
            "Animals" => capitalise(rng.pick::<&str>(ANIMALS)),
            "material" => rng.pick(MATERIALS).to_string(),
            other => format!("{{{other}}}"),
        };
        out.push_str(&value);
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    out
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// An endless supply of filler sentences: paragraph after paragraph, each
/// on a random topic and place, its body sentences in random order.
pub struct Prose {
    rng: Rng,
    queue: Vec<String>,
}

impl Prose {
    /// Filler drawn from `rng`.
    pub fn new(rng: Rng) -> Self {
        Self {
            rng,
            queue: Vec::new(),
        }
    }

    /// Drops the rest of the current paragraph, so that the next sentence
    /// opens a new one (each document starts with its own topic).
    pub fn new_paragraph(&mut self) {
        self.queue.clear();
    }

    /// The next sentence.
    pub fn sentence(&mut self) -> String {
        if self.queue.is_empty() {
            self.paragraph();
        }
        self.queue.pop().unwrap_or_default()
    }

    fn paragraph(&mut self) {
        let topic = self.rng.pick(TOPICS);
        let place = place_name(&mut self.rng);
        let mut body: Vec<&str> = topic.body.to_vec();
        self.rng.shuffle(&mut body);
        let keep = 5 + self.rng.below(body.len().saturating_sub(4).max(1));
        let mut sentences: Vec<String> = vec![fill(
            self.rng.pick::<&str>(topic.opening),
            &place,
            &mut self.rng,
        )];
        for t in body.into_iter().take(keep) {
            sentences.push(fill(t, &place, &mut self.rng));
        }
        sentences.reverse(); // popped from the end
        self.queue = sentences;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_slot_in_every_template_is_filled() {
        let mut rng = Rng::new(3);
        for topic in TOPICS {
            for t in topic.opening.iter().chain(topic.body) {
                let s = fill(t, "Selford", &mut rng);
                assert!(!s.contains('{') && !s.contains('}'), "{t} -> {s}");
            }
        }
    }

    #[test]
    fn prose_varies() {
        let mut p = Prose::new(Rng::new(1));
        let sentences: Vec<String> = (0..200).map(|_| p.sentence()).collect();
        let distinct: std::collections::HashSet<_> = sentences.iter().collect();
        assert!(distinct.len() > 150, "{} distinct of 200", distinct.len());
    }
}
