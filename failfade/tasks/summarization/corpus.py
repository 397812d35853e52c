"""A seeded synthetic corpus of short event reports whose reference summaries state the key facts.

No real summarization corpus ships inside a package on the registry that this machine can reach
(the one found, aclsum, has 250 papers: too few to train on), so the offline default generates
one. Each document has a *key sentence* (a role, a person, an event phrased one of three ways, a
city, a day), a *count sentence* (a number and a unit) and one to three neutral filler sentences.
The reference restates the facts with the event in its canonical words, so a model must select,
reorder and rewrite:

    document:  "on tuesday , engineer maya okafor put pen to a trade pact in lisbon . the meeting
                drew 412 delegates . the weather was mild for the season ."
    reference: "engineer maya okafor signed a trade deal in lisbon on tuesday with 412 delegates ."

Every document records its facts (name, role, event, city, day, number), so a summary can be
checked fact by fact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

ROLES = ["engineer", "mayor", "professor", "doctor", "lawyer", "farmer", "pilot", "teacher"]
FIRST = ["maya", "tom", "lena", "omar", "ines", "raj", "yuki", "sara", "paul", "nora", "ivan", "zoe",
         "li", "ana", "ben", "eva", "kofi", "mia", "leo", "amir", "rosa", "jon", "ada", "ugo"]
LAST = ["okafor", "silva", "novak", "tanaka", "berg", "costa", "haddad", "kim", "moreau", "patel", "ruiz",
        "smith", "weber", "young", "adams", "bauer", "chen", "diaz", "evans", "fischer", "garcia"]
# canonical event (what the reference says) -> three paraphrases a document may use
EVENTS = {
    "signed a trade deal": ["signed a trade deal", "put pen to a trade pact", "agreed a commerce accord"],
    "opened a new hospital": ["opened a new hospital", "cut the ribbon on a new clinic", "launched a new medical centre"],
    "won a science prize": ["won a science prize", "took home a research award", "was given a science medal"],
    "led a rescue mission": ["led a rescue mission", "headed a search and rescue effort", "directed a rescue operation"],
    "announced a new school": ["announced a new school", "unveiled plans for a school", "revealed a school project"],
    "launched a satellite": ["launched a satellite", "sent a satellite into orbit", "put a satellite into space"],
    "closed a factory": ["closed a factory", "shut down a plant", "ended work at a factory"],
    "planted a forest": ["planted a forest", "set out thousands of trees", "began a new woodland"],
}
CITIES = ["lisbon", "oslo", "lagos", "lima", "kyoto", "dakar", "quito", "riga", "turin", "perth", "accra", "hanoi",
          "tunis", "porto", "bergen", "cusco", "malmo", "nairobi", "krakow", "seville"]
DAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
UNITS = ["delegates", "volunteers", "guests", "workers", "students", "visitors"]
FILLERS = [
    "the weather was mild for the season .", "local papers covered the day in detail .",
    "traffic in the centre was slow all morning .", "a small band played near the entrance .",
    "the event was streamed online as well .", "coffee was served in the main hall .",
    "several speeches were given in the afternoon .", "the organisers thanked the city staff .",
    "photographers waited outside the building .", "the venue had been renovated last year .",
    "a few shops stayed open late .", "the programme ran a little over time .",
]
FACTS = ("role", "name", "event", "city", "day", "number")


@dataclass(frozen=True)
class Report:
    key: str  # the key sentence
    count: str  # the count sentence
    fillers: tuple[str, ...]
    reference: str
    facts: dict  # role, name, event (canonical), city, day, number (as text)

    @property
    def document(self) -> str:
        return " ".join(t for t in (self.key, self.count) + self.fillers if t)


def _key_sentence(rng, role, name, phrase, city, day) -> str:
    order = int(rng.integers(0, 4))
    if order == 0:
        return f"on {day} , {role} {name} {phrase} in {city} ."
    if order == 1:
        return f"{role} {name} {phrase} in {city} on {day} ."
    if order == 2:
        return f"in {city} on {day} , {role} {name} {phrase} ."
    return f"{name} , a {role} , {phrase} in {city} on {day} ."


def make_report(rng: np.random.Generator) -> Report:
    role = ROLES[rng.integers(len(ROLES))]
    name = f"{FIRST[rng.integers(len(FIRST))]} {LAST[rng.integers(len(LAST))]}"
    event = list(EVENTS)[rng.integers(len(EVENTS))]
    phrase = EVENTS[event][rng.integers(3)]
    city, day = CITIES[rng.integers(len(CITIES))], DAYS[rng.integers(len(DAYS))]
    number, unit = str(int(rng.integers(12, 990))), UNITS[rng.integers(len(UNITS))]
    count = f"the {'meeting' if rng.random() < 0.5 else 'event'} drew {number} {unit} ."
    fillers = tuple(FILLERS[i] for i in rng.choice(len(FILLERS), int(rng.integers(1, 4)), replace=False))
    reference = f"{role} {name} {event} in {city} on {day} with {number} {unit} ."
    facts = {"role": role, "name": name, "event": event, "city": city, "day": day, "number": number}
    return Report(_key_sentence(rng, role, name, phrase, city, day), count, fillers, reference, facts)


def make_corpus(n: int, seed: int) -> list[Report]:
    rng = np.random.default_rng(np.random.SeedSequence([seed, 31]))
    return [make_report(rng) for _ in range(n)]


def facts_kept(summary: str, facts: dict) -> dict[str, bool]:
    """Which key facts a summary states (word-boundary match of each fact's words)."""
    words = f" {summary.strip()} "
    return {k: f" {facts[k]} " in words for k in FACTS}
