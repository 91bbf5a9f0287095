"""Generate the bundled sample data files from the fact table in facts.py.

    python medjax/data/samples/build.py

writes, next to this file (schemas and counts in README.md):

  pretrain.jsonl / pretrain_eval.jsonl            {"text"} textbook-style documents
  sft_sharegpt.jsonl / sft_sharegpt_eval.jsonl    {"id", "conversations": [{"from", "value"}]}
  sft_messages.jsonl / sft_messages_eval.jsonl    {"messages": [{"role", "content"}]}
  sft_alpaca.jsonl                                {"instruction", "input", "output"}
  preference.jsonl / preference_eval.jsonl        {"prompt", "chosen", "rejected"}
  preference_messages.jsonl                       {"chosen": [msgs], "rejected": [msgs]}
  kto.jsonl / kto_eval.jsonl                      {"prompt", "completion", "label"}
  mcq.jsonl                                       {"question", "options", "answer", "answer_idx"}

Each ``*_eval`` file comes from another seed (the training seed + 1) and shares
no record with its training file (for preference pairs: no (chosen, rejected)
pair; for KTO: no (completion, label)). Preference, KTO and multiple-choice rows
pair a fact from facts.py with a wrong fact of the same type; which wrong facts
are safely wrong is decided by distractors.py.

Output is deterministic: every generator takes its own ``random.Random(seed)``
and iterates over lists in a fixed order, so running the script twice gives
byte-identical files. Standard library only.

Adding a format: write ``def <format>_records(rng, n, exclude=frozenset()) ->
list[dict]`` next to the others, built from DRUGS / CONDITIONS and the phrase
helpers below, and add its file to ``build_all()``. Changing facts.py,
distractors.py or a template changes the files: rebuild and update the counts
in README.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import sys

# Run as a script (python medjax/data/samples/build.py) or imported as
# medjax.data.samples.build.
if __package__:
    from .distractors import (CONDITION_EXTRA_AREAS, CONDITION_SYSTEM_NEAR, CONDITION_TERMS,
                              DRUG_AREA, EXTRA_USES, INFECTIOUS, SYSTEM_AREAS, SYSTEM_NEAR,
                              VAGUE_INDICATIONS, conflict, related, vague_test)
    from .facts import CONDITIONS, DRUGS, NON_DRUG_MEASURES
else:  # pragma: no cover - script mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from distractors import (CONDITION_EXTRA_AREAS, CONDITION_SYSTEM_NEAR, CONDITION_TERMS,
                             DRUG_AREA, EXTRA_USES, INFECTIOUS, SYSTEM_AREAS, SYSTEM_NEAR,
                             VAGUE_INDICATIONS, conflict, related, vague_test)
    from facts import CONDITIONS, DRUGS, NON_DRUG_MEASURES

HERE = os.path.dirname(os.path.abspath(__file__))

DRUG_BY_NAME = {d["name"]: d for d in DRUGS}
CONDITION_BY_NAME = {c["name"]: c for c in CONDITIONS}

# ---------------------------------------------------------------------------
# Validation of the fact table
# ---------------------------------------------------------------------------

_DRUG_KEYS = {"name", "drug_class", "indications", "mechanism", "adverse_effects",
              "contraindication", "monitoring"}
_CONDITION_KEYS = {"name", "organ_system", "key_symptoms", "first_line", "diagnostic_test"}


def validate() -> None:
    """Raise ValueError if facts.py does not match the schema in its docstring."""
    errors = []

    def check_str(where, value):
        if not isinstance(value, str) or not value.strip() or value != value.strip():
            errors.append(f"{where}: expected a non-empty stripped string, got {value!r}")
        elif value.endswith("."):
            errors.append(f"{where}: phrase must not end with a period: {value!r}")

    def check_list(where, value, lo, hi):
        if not isinstance(value, list) or not lo <= len(value) <= hi:
            errors.append(f"{where}: expected a list of {lo}-{hi} strings, got {value!r}")
            return
        for i, v in enumerate(value):
            check_str(f"{where}[{i}]", v)

    for kind, table, required, optional in (
        ("drug", DRUGS, _DRUG_KEYS, {"note"}),
        ("condition", CONDITIONS, _CONDITION_KEYS, {"note", "asymptomatic"}),
    ):
        seen = set()
        for i, rec in enumerate(table):
            where = f"{kind} {i} ({rec.get('name')!r})"
            keys = set(rec)
            if not required <= keys or not keys <= required | optional:
                errors.append(f"{where}: keys {sorted(keys)}; required {sorted(required)}, "
                              f"optional {sorted(optional)}")
                continue
            if rec["name"] in seen:
                errors.append(f"{where}: duplicate name")
            seen.add(rec["name"])
            if "note" in rec and not (isinstance(rec["note"], str) and rec["note"].endswith(".")):
                errors.append(f"{where}: note must be one sentence ending with a period")
            if "asymptomatic" in rec and not isinstance(rec["asymptomatic"], bool):
                errors.append(f"{where}: asymptomatic must be a bool")
            for key in sorted(required - {"name"}):
                value = rec[key]
                if key == "indications":
                    check_list(f"{where}.{key}", value, 1, 3)
                elif key == "adverse_effects":
                    check_list(f"{where}.{key}", value, 2, 3)
                elif key == "key_symptoms":
                    check_list(f"{where}.{key}", value, 1, 4)
                elif key == "first_line":
                    check_list(f"{where}.{key}", value, 1, 4)
                    for item in value if isinstance(value, list) else []:
                        if item not in DRUG_BY_NAME and item not in NON_DRUG_MEASURES:
                            errors.append(f"{where}.first_line: {item!r} is neither a drug "
                                          "in DRUGS nor in NON_DRUG_MEASURES")
                else:
                    check_str(f"{where}.{key}", value)
    if errors:
        raise ValueError("facts.py is invalid:\n  " + "\n  ".join(errors))


# ---------------------------------------------------------------------------
# Phrase helpers (shared by all generators)
# ---------------------------------------------------------------------------

# Letters whose spoken name starts with a vowel sound: "an SGLT2", "an H2", "an MRI".
_VOWEL_SOUND_LETTERS = set("AEFHILMNORSX")


def article(phrase: str) -> str:
    """'a' or 'an' for ``phrase`` (handles initialisms such as 'SGLT2', 'ACE')."""
    word = phrase.split()[0]
    head = word.split("-")[0]
    if head[:1].isdigit():
        return "an" if head[0] == "8" or head.startswith(("11", "18")) else "a"
    if len(head) >= 2 and head[:2].isupper():  # initialism: read letter by letter
        if head in {"ACE"}:  # acronyms read as a word
            return "an"
        return "an" if head[0] in _VOWEL_SOUND_LETTERS else "a"
    if word.lower().startswith(("uni", "use", "eu", "one")):
        return "a"
    return "an" if word[0].lower() in "aeiou" else "a"


def with_article(phrase: str) -> str:
    return f"{article(phrase)} {phrase}"


def cap(s: str) -> str:
    """Capitalize the first character only ('type 2 diabetes' -> 'Type 2 diabetes')."""
    return s[:1].upper() + s[1:]


def join(items: list[str], conj: str = "and") -> str:
    """English list with a serial comma: 'a', 'a and b', 'a, b, and c'."""
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} {conj} {items[1]}"
    return ", ".join(items[:-1]) + f", {conj} " + items[-1]


def sample_list(rng: random.Random, items: list[str], lo: int = 1) -> list[str]:
    """A random non-empty subset of ``items`` (at least ``lo``), kept in table order."""
    k = rng.randint(min(lo, len(items)), len(items))
    keep = set(rng.sample(range(len(items)), k))
    return [x for i, x in enumerate(items) if i in keep]


# ---------------------------------------------------------------------------
# Sentence templates
# ---------------------------------------------------------------------------
# Placeholders: {Name}/{name} entity name (capitalized / as in the table),
# {a_class} drug class with article, {ind} indications, {mech} mechanism,
# {ae} adverse effects, {ci} contraindication, {mon} monitoring,
# {a_system} organ system with article, {sym} symptoms, {fl} first-line
# treatment, {dx} diagnostic test. {It} is "It" / "The drug" / the name.

DRUG_TEMPLATES = {
    "intro": [
        "{Name} is {a_class}.",
        "{Name} is {a_class} used for {ind}.",
        "{Name} is best described as {a_class}.",
        "{Name} is classified as {a_class}.",
        "As {a_class}, {name} is mainly used for {ind}.",
        "{Name}, {a_class}, is widely prescribed for {ind}.",
        "The drug {name} is {a_class}.",
        "Pharmacologically, {name} is {a_class}.",
    ],
    "indications": [
        "{It} is indicated for {ind}.",
        "{It} is used for {ind}.",
        "Its main indications include {ind}.",
        "Clinicians prescribe {name} for {ind}.",
        "{Name} has an established role in {ind}.",
        "Common reasons to prescribe {name} include {ind}.",
        "Indications for {name} include {ind}.",
        "In practice, {name} is used for {ind}.",
    ],
    "mechanism": [
        "{It} {mech}.",
        "Mechanistically, {name} {mech}.",
        "Its mechanism of action is as follows: it {mech}.",
        "At the molecular level, {name} {mech}.",
        "Put simply, {name} {mech}.",
        "{Name} {mech}, which accounts for its clinical effect.",
        "In terms of mechanism, the drug {mech}.",
        "The key point about its action is that it {mech}.",
    ],
    "adverse_effects": [
        "Adverse effects include {ae}.",
        "Important adverse effects of {name} are {ae}.",
        "Patients taking {name} may experience {ae}.",
        "Side effects of {name} include {ae}.",
        "{It} can cause {ae}.",
        "Recognized adverse effects are {ae}.",
        "Treatment with {name} may be complicated by {ae}.",
        "The main adverse effects to remember are {ae}.",
    ],
    "contraindication": [
        "{It} is contraindicated in {ci}.",
        "{Name} should be avoided in {ci}.",
        "Use of {name} is contraindicated in {ci}.",
        "{Name} should not be used in {ci}.",
        "An important contraindication to {name} is its use in {ci}.",
        "Prescribers should avoid {name} in {ci}.",
        "{Name} must not be given in {ci}.",
        "Because of safety concerns, {name} is avoided in {ci}.",
    ],
    "monitoring": [
        "Monitoring includes {mon}.",
        "During treatment, clinicians should monitor {mon}.",
        "Patients on {name} need monitoring of {mon}.",
        "Recommended monitoring for {name} covers {mon}.",
        "While a patient takes {name}, monitor {mon}.",
        "Follow-up of patients taking {name} includes checking {mon}.",
        "Safe use of {name} requires monitoring of {mon}.",
        "{Name} therapy is monitored with {mon}.",
    ],
}

CONDITION_TEMPLATES = {
    "intro": [
        "{Name} is {a_system} condition.",
        "{Name} is {a_system} disorder.",
        "{Name} is classified as {a_system} disease.",
        "{Name} is one of the {system} disorders.",
        "Among {system} disorders, {name} is an important one to recognize.",
        "In medicine, {name} is grouped with the {system} disorders.",
        "Clinicians regard {name} as {a_system} condition.",
        "{Name} is {a_system} illness.",
    ],
    "symptoms": [
        "Typical clinical features include {sym}.",
        "Patients with {name} commonly present with {sym}.",
        "{Name} is characterized by {sym}.",
        "Key features of {name} are {sym}.",
        "Common presenting features are {sym}.",
        "The clinical picture of {name} includes {sym}.",
        "Common findings include {sym}.",
        "Features that suggest {name} include {sym}.",
    ],
    "symptoms_asymptomatic": [
        "{Name} often causes no symptoms and comes to attention through {sym}.",
        "Most patients with {name} have no symptoms; it is usually detected through {sym}.",
        "{Name} is usually silent and is recognized through {sym}.",
        "Because {name} is often asymptomatic, it tends to be found through {sym}.",
    ],
    "first_line": [
        "First-line treatment is {fl}.",
        "The usual first-line therapy for {name} is {fl}.",
        "{Name} is usually treated first with {fl}.",
        "Initial management of {name} relies on {fl}.",
        "Guidelines recommend {fl} as first-line treatment for {name}.",
        "For most patients with {name}, treatment starts with {fl}.",
        "The first-line choice for {name} is {fl}.",
        "Treatment of {name} typically begins with {fl}.",
    ],
    "first_line_many": [
        "First-line options include {fl}.",
        "First-line treatment of {name} includes {fl}.",
        "Initial therapy for {name} draws on {fl}.",
        "Guidelines list {fl} among first-line treatments for {name}.",
        "Standard first-line drugs for {name} include {fl}.",
        "The main first-line treatments are {fl}.",
        "First-line drugs for {name} include {fl}.",
        "For {name}, first-line treatment includes {fl}.",
    ],
    "drug_link": [
        "{Drug}, {a_class}, is a first-line drug for {name}.",
        "{Drug} is {a_class} used first-line in {name}.",
        "In {name}, {drug} is a first-line choice; it {mech}.",
        "{Drug} is used in {name} because it {mech}.",
    ],
    "diagnosis": [
        "Diagnosis relies on {dx}.",
        "The diagnosis is established by {dx}.",
        "{Name} is diagnosed by {dx}.",
        "Clinicians confirm {name} with {dx}.",
        "The key investigation is {dx}.",
        "To confirm {name}, clinicians use {dx}.",
        "Diagnosis of {name} is based on {dx}.",
        "The diagnosis of {name} is made with {dx}.",
    ],
}

_DRUG_SLOTS = ["indications", "mechanism", "adverse_effects", "contraindication", "monitoring", "note"]
_CONDITION_SLOTS = ["symptoms", "first_line", "drug_link", "diagnosis", "note"]


def _drug_doc(rng: random.Random, drug: dict, n_sentences: int) -> str:
    intro = rng.choice(DRUG_TEMPLATES["intro"])
    # An intro that already names the indications is not followed by an
    # indications sentence.
    slots = [s for s in _DRUG_SLOTS
             if (s != "note" or "note" in drug) and (s != "indications" or "{ind}" not in intro)]
    chosen = set(rng.sample(slots, min(n_sentences - 1, len(slots))))
    name = drug["name"]
    fields = {
        "Name": cap(name),
        "name": name,
        "drug_class": drug["drug_class"],
        "a_class": with_article(drug["drug_class"]),
        "ind": join(sample_list(rng, drug["indications"])),
        "mech": drug["mechanism"],
        "ae": join(sample_list(rng, drug["adverse_effects"], lo=2)),
        "ci": drug["contraindication"],
        "mon": drug["monitoring"],
    }
    sentences = [intro.format(**fields)]
    for slot in _DRUG_SLOTS:  # fixed textbook order: use, mechanism, harms, monitoring
        if slot not in chosen:
            continue
        if slot == "note":
            sentences.append(drug["note"])
            continue
        fields["It"] = rng.choice(["It", "It", "The drug", cap(name)])
        sentences.append(rng.choice(DRUG_TEMPLATES[slot]).format(**fields))
    return " ".join(sentences)


def _first_line_phrase(items: list[str]) -> str:
    return join(items, "and")


def _condition_doc(rng: random.Random, cond: dict, n_sentences: int) -> str:
    drugs = [DRUG_BY_NAME[x] for x in cond["first_line"] if x in DRUG_BY_NAME]
    slots = [s for s in _CONDITION_SLOTS
             if (s != "note" or "note" in cond) and (s != "drug_link" or drugs)]
    chosen = set(rng.sample(slots, min(n_sentences - 1, len(slots))))
    name = cond["name"]
    fields = {
        "Name": cap(name),
        "name": name,
        "system": cond["organ_system"],
        "a_system": with_article(cond["organ_system"]),
        "sym": join(sample_list(rng, cond["key_symptoms"], lo=min(2, len(cond["key_symptoms"])))),
        "fl": _first_line_phrase(cond["first_line"]),
        "dx": cond["diagnostic_test"],
    }
    sentences = [rng.choice(CONDITION_TEMPLATES["intro"]).format(**fields)]
    for slot in _CONDITION_SLOTS:
        if slot not in chosen:
            continue
        if slot == "note":
            sentences.append(cond["note"])
        elif slot == "symptoms":
            key = "symptoms_asymptomatic" if cond.get("asymptomatic") else "symptoms"
            sentences.append(rng.choice(CONDITION_TEMPLATES[key]).format(**fields))
        elif slot == "first_line":
            key = "first_line_many" if len(cond["first_line"]) > 1 else "first_line"
            sentences.append(rng.choice(CONDITION_TEMPLATES[key]).format(**fields))
        elif slot == "drug_link":
            drug = rng.choice(drugs)
            link = dict(fields, Drug=cap(drug["name"]), drug=drug["name"],
                        a_class=with_article(drug["drug_class"]), mech=drug["mechanism"])
            sentences.append(rng.choice(CONDITION_TEMPLATES["drug_link"]).format(**link))
        else:
            sentences.append(rng.choice(CONDITION_TEMPLATES[slot]).format(**fields))
    return " ".join(sentences)


# ---------------------------------------------------------------------------
# Generators: one function per output format
# ---------------------------------------------------------------------------

def _entities() -> list[tuple[str, dict]]:
    return [("drug", d) for d in DRUGS] + [("condition", c) for c in CONDITIONS]


def pretrain_docs(rng: random.Random, n: int, exclude: frozenset[str] = frozenset()) -> list[dict]:
    """``n`` distinct {"text": ...} documents of 2-6 sentences about one drug or condition.

    Entities are drawn in shuffled rounds, so every drug and condition appears
    about equally often. A text already generated, or in ``exclude``, is
    redrawn for the same entity.
    """
    entities = _entities()
    order: list[tuple[str, dict]] = []
    while len(order) < n:
        round_ = list(entities)
        rng.shuffle(round_)
        order.extend(round_)
    seen = set(exclude)
    docs = []
    for kind, rec in order[:n]:
        for _ in range(100):
            k = rng.randint(2, 6)
            text = _drug_doc(rng, rec, k) if kind == "drug" else _condition_doc(rng, rec, k)
            if text not in seen:
                break
        else:  # pragma: no cover - would need far more documents than templates allow
            raise RuntimeError(f"could not draw a new document for {rec['name']!r}")
        seen.add(text)
        docs.append({"text": text})
    return docs


# ---------------------------------------------------------------------------
# Wrong facts: which values are safely wrong (see distractors.py)
# ---------------------------------------------------------------------------

ORGAN_SYSTEMS = sorted({c["organ_system"] for c in CONDITIONS})


def _drug_uses(drug: dict) -> list[str]:
    """Everything a drug is used for: indications, extra uses, first-line conditions."""
    uses = list(drug["indications"]) + EXTRA_USES.get(drug["name"], [])
    for cond in CONDITIONS:
        if drug["name"] in cond["first_line"]:
            uses += _condition_terms(cond)
    return uses


def _condition_terms(cond: dict) -> list[str]:
    return [cond["name"]] + CONDITION_TERMS.get(cond["name"], [])


def treats_plausibly(drug: dict, cond: dict) -> bool:
    """True unless ``drug`` is clearly not a treatment for ``cond``."""
    if drug["name"] in cond["first_line"]:
        return True
    areas = set(SYSTEM_AREAS[cond["organ_system"]]) | CONDITION_EXTRA_AREAS.get(cond["name"], set())
    if cond["name"] in INFECTIOUS:
        areas.add("infection")
    if DRUG_AREA[drug["name"]] in areas:
        return True
    return related(_condition_terms(cond), _drug_uses(drug))


def wrong_first_line(cond: dict) -> list[str]:
    """Drugs (names) that are clearly not a treatment for ``cond``."""
    return [d["name"] for d in DRUGS if not treats_plausibly(d, cond)]


_INDICATION_OWNERS: dict[str, list[str]] = {}
for _d in DRUGS:
    for _ind in _d["indications"]:
        _INDICATION_OWNERS.setdefault(_ind, []).append(_d["name"])


def wrong_indications(drug: dict) -> list[str]:
    """Other drugs' indication phrases that are clearly not uses of ``drug``."""
    uses = _drug_uses(drug)
    out = []
    for phrase, owners in _INDICATION_OWNERS.items():
        if phrase in VAGUE_INDICATIONS or phrase in drug["indications"]:
            continue
        if any(DRUG_AREA[o] == DRUG_AREA[drug["name"]] or conflict(o, drug["name"]) for o in owners):
            continue
        if related([phrase], uses):
            continue
        if any(treats_plausibly(drug, c) for c in CONDITIONS if related([phrase], _condition_terms(c))):
            continue
        out.append(phrase)
    return out


def wrong_classes(drug: dict) -> list[str]:
    return sorted({d["drug_class"] for d in DRUGS
                   if not conflict(d["name"], drug["name"]) and d["drug_class"] != drug["drug_class"]})


def wrong_mechanisms(drug: dict) -> list[str]:
    return [d["mechanism"] for d in DRUGS
            if DRUG_AREA[d["name"]] != DRUG_AREA[drug["name"]] and not conflict(d["name"], drug["name"])
            and d["mechanism"] != drug["mechanism"]]


def _near_systems(cond: dict) -> set[str]:
    return ({cond["organ_system"]} | SYSTEM_NEAR.get(cond["organ_system"], set())
            | CONDITION_SYSTEM_NEAR.get(cond["name"], set()))


def wrong_systems(cond: dict) -> list[str]:
    near = _near_systems(cond)
    return [s for s in ORGAN_SYSTEMS if s not in near]


def wrong_tests(cond: dict) -> list[str]:
    """Other conditions' diagnostic tests, from clearly unrelated organ systems."""
    out = []
    for other in CONDITIONS:
        test = other["diagnostic_test"]
        if (vague_test(test) or test == cond["diagnostic_test"] or test in out
                or other["organ_system"] in _near_systems(cond)
                or cond["organ_system"] in _near_systems(other)):
            continue
        out.append(test)
    return out


# ---------------------------------------------------------------------------
# Claims: one question, one answer template, the true value and wrong values
# ---------------------------------------------------------------------------
# The preference, KTO and multiple-choice generators all start from a claim:
# the answer template is filled with the true value (chosen / label true /
# correct option) or a wrong value of the same type, so the two answers differ
# only in the fact. {Name}/{name}: the subject; {X}/{x}: the value; {a_x}: the
# value with its article.

CLAIMS = {
    "drug_class": {
        "prompts": ["What class of drug is {name}?", "Which drug class does {name} belong to?",
                    "What type of medication is {name}?", "How is {name} classified?"],
        "answers": ["{Name} is {a_x}.", "{Name} is classified as {a_x}.",
                    "Pharmacologically, {name} is {a_x}."],
    },
    "indication": {
        "prompts": ["What is {name} used for?", "Name one condition that {name} is used for.",
                    "Give one indication for {name}.", "What is one clinical use of {name}?"],
        "answers": ["{Name} is used for {x}.", "One indication for {name} is {x}.",
                    "{Name} is prescribed for {x}."],
    },
    "first_line": {
        "prompts": ["What is a first-line drug for {name}?",
                    "Which drug is used first-line for {name}?",
                    "Name a first-line treatment for {name}.",
                    "Which drug is typically started first for {name}?"],
        "answers": ["{X} is a first-line treatment for {name}.",
                    "A first-line drug for {name} is {x}.",
                    "For {name}, {x} is a first-line choice."],
    },
    "mechanism": {
        "prompts": ["How does {name} work?", "What is the mechanism of action of {name}?",
                    "Briefly explain how {name} acts.", "What does {name} do pharmacologically?"],
        "answers": ["{Name} {x}.", "Mechanistically, {name} {x}.",
                    "In terms of mechanism, {name} {x}."],
    },
    "diagnosis": {
        "prompts": ["How is {name} diagnosed?", "How is the diagnosis of {name} made?",
                    "What is the key to diagnosing {name}?", "How do clinicians confirm {name}?"],
        "answers": ["Diagnosis of {name} relies on {x}.", "{Name} is diagnosed by {x}.",
                    "The diagnosis of {name} is based on {x}."],
    },
    "organ_system": {
        "prompts": ["What kind of condition is {name}?",
                    "Which group of disorders does {name} belong to?",
                    "In which area of medicine is {name} classified?"],
        "answers": ["{Name} is {a_x} condition.", "{Name} is {a_x} disorder.",
                    "{Name} is classified as {a_x} disease."],
    },
}
# Share of each claim type in the preference / KTO files (drug facts 3/5).
CLAIM_WEIGHTS = {"drug_class": 4, "indication": 4, "first_line": 4, "mechanism": 3,
                 "diagnosis": 3, "organ_system": 2}


def _claim_subjects(ctype: str) -> list[dict]:
    if ctype == "indication":  # drugs with a specific indication (not only "fever", ...)
        return [d for d in DRUGS if any(x not in VAGUE_INDICATIONS for x in d["indications"])]
    if ctype in ("drug_class", "mechanism"):
        return list(DRUGS)
    if ctype == "first_line":  # drug treatments only (not CPAP), so both answers name a drug
        return [c for c in CONDITIONS if any(x in DRUG_BY_NAME for x in c["first_line"])]
    if ctype == "diagnosis":  # a vague test ("the clinical history") is never a wrong answer,
        # so it would only ever be the right one: leave those conditions out
        return [c for c in CONDITIONS if not vague_test(c["diagnostic_test"])]
    return list(CONDITIONS)


def _true_values(ctype: str, subject: dict) -> list[str]:
    if ctype == "drug_class":
        return [subject["drug_class"]]
    if ctype == "indication":
        return [x for x in subject["indications"] if x not in VAGUE_INDICATIONS]
    if ctype == "mechanism":
        return [subject["mechanism"]]
    if ctype == "first_line":
        return [x for x in subject["first_line"] if x in DRUG_BY_NAME]
    if ctype == "diagnosis":
        return [subject["diagnostic_test"]]
    if ctype == "organ_system":
        return [subject["organ_system"]]
    raise ValueError(ctype)


_TRUE_WEIGHT: dict[str, dict[str, float]] = {}


def true_weight(ctype: str) -> dict[str, float]:
    """How often each value is the true answer when subjects are drawn evenly.

    Wrong answers are drawn with these weights, so every value is about as
    common among rejected answers as among chosen ones: the answer text alone
    ("dermatologic", "warfarin") says nothing about which side it is on; only
    its pairing with the subject does.
    """
    if ctype not in _TRUE_WEIGHT:
        weights: dict[str, float] = {}
        for subject in _claim_subjects(ctype):
            true = _true_values(ctype, subject)
            for v in true:
                weights[v] = weights.get(v, 0.0) + 1.0 / len(true)
        _TRUE_WEIGHT[ctype] = weights
    return _TRUE_WEIGHT[ctype]


def claim_values(ctype: str, subject: dict) -> tuple[list[str], list[str]]:
    """(true values, wrong values) of a claim type for one drug or condition.

    Wrong values are values of the same type that are true for some other
    subject (never a value that only ever appears as a wrong answer) and that
    distractors.py rules clearly wrong for this subject.
    """
    if ctype == "drug_class":
        wrong = wrong_classes(subject)
    elif ctype == "indication":
        wrong = wrong_indications(subject)
    elif ctype == "mechanism":
        wrong = wrong_mechanisms(subject)
    elif ctype == "first_line":
        wrong = wrong_first_line(subject)
    elif ctype == "diagnosis":
        wrong = wrong_tests(subject)
    elif ctype == "organ_system":
        wrong = wrong_systems(subject)
    else:
        raise ValueError(ctype)
    weights = true_weight(ctype)
    return _true_values(ctype, subject), [v for v in wrong if v in weights]


def validate_claims(min_wrong: int = 3) -> None:
    """Every claim subject must keep at least ``min_wrong`` wrong values (MCQ needs 3)."""
    errors = []
    for ctype in CLAIMS:
        for subject in _claim_subjects(ctype):
            true, wrong = claim_values(ctype, subject)
            if len(set(wrong)) < min_wrong:
                errors.append(f"{ctype} {subject['name']!r}: {len(set(wrong))} wrong values")
            if set(true) & set(wrong):
                errors.append(f"{ctype} {subject['name']!r}: a value is both true and wrong")
    missing = sorted(set(DRUG_BY_NAME) - set(DRUG_AREA))
    if missing:
        errors.append(f"drugs without an area in distractors.DRUG_AREA: {missing}")
    if errors:
        raise ValueError("distractors.py leaves too few wrong answers:\n  " + "\n  ".join(errors))


def _fill(template: str, subject: str, value: str) -> str:
    return template.format(Name=cap(subject), name=subject, X=cap(value), x=value,
                           a_x=with_article(value) if value else "")


def draw_claim(rng: random.Random, ctype: str, subject: dict) -> dict:
    """One question with a true and a wrong answer that differ only in the value."""
    spec = CLAIMS[ctype]
    true, wrong = claim_values(ctype, subject)
    prompt = _fill(rng.choice(spec["prompts"]), subject["name"], "")
    answer = rng.choice(spec["answers"])
    weights = true_weight(ctype)
    t = rng.choice(true)
    w = rng.choices(wrong, weights=[weights[v] for v in wrong])[0]
    return {"type": ctype, "subject": subject["name"], "prompt": prompt,
            "true": _fill(answer, subject["name"], t), "wrong": _fill(answer, subject["name"], w)}


def _claim_order(rng: random.Random, n: int) -> list[tuple[str, dict]]:
    """``n`` (claim type, subject) pairs: types by CLAIM_WEIGHTS, subjects in shuffled rounds."""
    types = [t for t, k in CLAIM_WEIGHTS.items() for _ in range(k)]
    queues: dict[str, list[dict]] = {t: [] for t in CLAIMS}
    order = []
    while len(order) < n:
        round_ = list(types)
        rng.shuffle(round_)
        for t in round_:
            if not queues[t]:
                queues[t] = _claim_subjects(t)
                rng.shuffle(queues[t])
            order.append((t, queues[t].pop()))
    return order[:n]


def _planned_claims(order: list[tuple[str, dict]]):
    """``claim(rng, i)``: a claim for the i-th planned (type, subject); when record i is
    redrawn (its answers are all taken), another subject of the same type."""
    last = [-1]

    def claim(rng: random.Random, i: int) -> dict:
        ctype, subject = order[i]
        if last[0] == i:
            subject = rng.choice(_claim_subjects(ctype))
        last[0] = i
        return draw_claim(rng, ctype, subject)
    return claim


def _distinct(rng: random.Random, n: int, draw, key, exclude: frozenset, what: str) -> list:
    """``n`` records from ``draw(rng, i)`` with distinct ``key`` values not in ``exclude``."""
    seen = set(exclude)
    out = []
    for i in range(n):
        for _ in range(200):
            rec = draw(rng, i)
            k = key(rec)
            if k not in seen:
                break
        else:  # pragma: no cover - would need far more records than templates allow
            raise RuntimeError(f"could not draw a new {what} record (#{i})")
        seen.add(k)
        out.append(rec)
    return out


# ---------------------------------------------------------------------------
# SFT: questions with accurate 1-3 sentence answers, sometimes multi-turn
# ---------------------------------------------------------------------------

SYSTEM_PROMPTS = [
    "You are a medical assistant. Answer briefly and accurately.",
    "You are a helpful assistant for medical students. Keep answers short and factual.",
    "Answer medical questions concisely, in one to three sentences.",
    "You are a careful clinical pharmacology tutor.",
    "You are a knowledgeable medical assistant. Give accurate, textbook-level answers.",
]

# topic -> (first-turn questions, follow-up questions); follow-ups refer to the
# subject of the previous turn as "it".
DRUG_QUESTIONS = {
    "class": (["What class of drug is {name}?", "Which drug class does {name} belong to?",
               "What kind of medication is {name}?"],
              ["What class of drug is it?", "Which drug class is it in?"]),
    "use": (["What is {name} used for?", "What are the main indications for {name}?",
             "When is {name} prescribed?"],
            ["What is it used for?", "What are its main indications?"]),
    "mechanism": (["How does {name} work?", "What is the mechanism of action of {name}?",
                   "Can you explain how {name} works?"],
                  ["How does it work?", "What is its mechanism of action?"]),
    "adverse": (["What are the side effects of {name}?",
                 "What adverse effects can {name} cause?",
                 "Which adverse effects should patients on {name} know about?"],
                ["What side effects can it cause?", "What are its main adverse effects?"]),
    "contraindication": (["When should {name} be avoided?",
                          "What is an important contraindication to {name}?",
                          "Who should not take {name}?"],
                         ["When should it be avoided?", "Are there any contraindications?"]),
    "monitoring": (["What should be monitored in a patient taking {name}?",
                    "How is treatment with {name} monitored?",
                    "What monitoring does {name} need?"],
                   ["What needs monitoring during treatment?", "How is it monitored?"]),
    "note": ([], ["Is there anything else worth knowing about it?",
                  "Anything else to keep in mind?"]),
}
CONDITION_QUESTIONS = {
    "overview": (["What is {name}?", "Can you tell me briefly what {name} is?"],
                 ["What kind of condition is it?"]),
    "symptoms": (["What are the symptoms of {name}?", "How does {name} usually present?",
                  "What are the typical features of {name}?"],
                 ["What are its typical features?", "How does it usually present?"]),
    "first_line": (["What is the first-line treatment for {name}?", "How is {name} treated?",
                    "Which treatment is used first for {name}?"],
                   ["How is it treated?", "What is the first-line treatment?"]),
    "diagnosis": (["How is {name} diagnosed?", "Which test confirms {name}?",
                   "How do doctors confirm {name}?"],
                  ["How is it diagnosed?", "How is the diagnosis confirmed?"]),
    "note": ([], ["Is there anything else worth knowing about it?",
                  "Anything else to keep in mind?"]),
}


def _drug_answer(rng: random.Random, drug: dict, topic: str) -> str:
    name, Name = drug["name"], cap(drug["name"])
    a_class = with_article(drug["drug_class"])
    ind = join(drug["indications"])
    if topic == "class":
        s = [f"{Name} is {a_class}."]
        if rng.random() < 0.5:
            s.append(f"It {drug['mechanism']}.")
    elif topic == "use":
        main = (f"The main indications for {name} are {ind}." if len(drug["indications"]) > 1
                else f"The main indication for {name} is {ind}.")
        s = [rng.choice([f"{Name} is used for {ind}.", f"{Name} is {a_class} used for {ind}.",
                         main])]
        if rng.random() < 0.3:
            s.append(f"It {drug['mechanism']}.")
    elif topic == "mechanism":
        s = [rng.choice([f"{Name} {drug['mechanism']}.",
                         f"{Name} is {a_class} that {drug['mechanism']}."])]
        if rng.random() < 0.4:
            s.append(f"This is why it is used for {ind}.")
    elif topic == "adverse":
        ae = join(drug["adverse_effects"])
        s = [rng.choice([f"Important adverse effects of {name} include {ae}.",
                         f"{Name} can cause {ae}.", f"Side effects of {name} include {ae}."])]
        if rng.random() < 0.4:
            s.append(f"Monitoring includes {drug['monitoring']}.")
    elif topic == "contraindication":
        s = [rng.choice([f"{Name} is contraindicated in {drug['contraindication']}.",
                         f"{Name} should be avoided in {drug['contraindication']}."])]
        if rng.random() < 0.3:
            s.append("This is one important contraindication, not a complete list.")
    elif topic == "monitoring":
        s = [rng.choice([f"While a patient takes {name}, clinicians monitor {drug['monitoring']}.",
                         f"Monitoring during {name} treatment includes {drug['monitoring']}."])]
        if rng.random() < 0.3:
            s.append(f"Its adverse effects include {join(drug['adverse_effects'])}.")
    elif topic == "note":
        s = [drug["note"]]
    else:
        raise ValueError(topic)
    return " ".join(s)


def _symptom_sentence(rng: random.Random, cond: dict) -> str:
    name, Name = cond["name"], cap(cond["name"])
    sym = join(cond["key_symptoms"])
    if cond.get("asymptomatic"):
        return rng.choice([f"{Name} often causes no symptoms and is usually found through {sym}.",
                           f"Most patients with {name} have no symptoms; it is usually detected "
                           f"through {sym}."])
    return rng.choice([f"Patients with {name} commonly present with {sym}.",
                       f"Typical features of {name} are {sym}.",
                       f"{Name} is characterized by {sym}."])


def _condition_answer(rng: random.Random, cond: dict, topic: str) -> str:
    name, Name = cond["name"], cap(cond["name"])
    if topic == "overview":
        sym = join(cond["key_symptoms"])
        s = [f"{Name} is {with_article(cond['organ_system'])} condition.",
             f"It often causes no symptoms and is usually found through {sym}."
             if cond.get("asymptomatic") else
             rng.choice([f"Typical features include {sym}.",
                         f"Patients commonly present with {sym}."])]
    elif topic == "symptoms":
        s = [_symptom_sentence(rng, cond)]
        if rng.random() < 0.3:
            s.append(f"Diagnosis relies on {cond['diagnostic_test']}.")
    elif topic == "first_line":
        fl = join(cond["first_line"])
        if len(cond["first_line"]) == 1:
            s = [rng.choice([f"First-line treatment for {name} is {fl}.",
                             f"{Name} is usually treated first with {fl}."])]
        else:
            s = [rng.choice([f"First-line treatment for {name} includes {fl}.",
                             f"First-line drugs for {name} include {fl}."])]
        drugs = [DRUG_BY_NAME[x] for x in cond["first_line"] if x in DRUG_BY_NAME]
        if drugs and rng.random() < 0.5:
            d = rng.choice(drugs)
            s.append(f"{cap(d['name'])} is {with_article(d['drug_class'])} that {d['mechanism']}.")
    elif topic == "diagnosis":
        s = [rng.choice([f"Diagnosis of {name} relies on {cond['diagnostic_test']}.",
                         f"The diagnosis of {name} is based on {cond['diagnostic_test']}."])]
        if rng.random() < 0.3:
            s.append(_symptom_sentence(rng, cond))
    elif topic == "note":
        s = [cond["note"]]
    else:
        raise ValueError(topic)
    return " ".join(s)


def _sft_conversation(rng: random.Random) -> list[dict]:
    """[{"role", "content"}, ...]: optional system, then 1-3 user/assistant exchanges."""
    kind, rec = rng.choice(_entities())
    questions = DRUG_QUESTIONS if kind == "drug" else CONDITION_QUESTIONS
    answer = _drug_answer if kind == "drug" else _condition_answer
    topics = [t for t in questions if t != "note"]
    n_turns = rng.choices([1, 2, 3], weights=[60, 30, 10])[0]
    first = rng.choice(topics)
    # An overview already lists the symptoms, so the two never share a conversation.
    overlap = {"overview": "symptoms", "symptoms": "overview"}.get(first)
    later = [t for t in topics if t not in (first, overlap)] + (["note"] if "note" in rec else [])
    chosen = [first] + rng.sample(later, n_turns - 1)
    msgs = []
    if rng.random() < 0.35:
        msgs.append({"role": "system", "content": rng.choice(SYSTEM_PROMPTS)})
    for i, topic in enumerate(chosen):
        q = rng.choice(questions[topic][0] if i == 0 else questions[topic][1])
        msgs.append({"role": "user", "content": q.format(name=rec["name"])})
        msgs.append({"role": "assistant", "content": answer(rng, rec, topic)})
    return msgs


def _conv_key(msgs: list[dict]) -> tuple:
    return tuple((m["role"], m["content"]) for m in msgs)


_SHAREGPT_FROM = {"system": "system", "user": "human", "assistant": "gpt"}
_SHAREGPT_ROLE = {v: k for k, v in _SHAREGPT_FROM.items()}


def sft_conversations(rng: random.Random, n: int, exclude: frozenset = frozenset()) -> list[list[dict]]:
    """``n`` distinct conversations (role/content lists) not in ``exclude`` (conversation keys)."""
    return _distinct(rng, n, lambda r, i: _sft_conversation(r), _conv_key, exclude, "SFT")


def sft_sharegpt_records(rng: random.Random, n: int, exclude: frozenset = frozenset(),
                         id_prefix: str = "medjax-sft") -> list[dict]:
    """{"id", "conversations": [{"from": "system"|"human"|"gpt", "value"}]} (UltraMedical style)."""
    return [{"id": f"{id_prefix}-{i:04d}",
             "conversations": [{"from": _SHAREGPT_FROM[m["role"]], "value": m["content"]}
                               for m in msgs]}
            for i, msgs in enumerate(sft_conversations(rng, n, exclude))]


def sft_messages_records(rng: random.Random, n: int, exclude: frozenset = frozenset()) -> list[dict]:
    """{"messages": [{"role": "system"|"user"|"assistant", "content"}]} (OpenAI style)."""
    return [{"messages": msgs} for msgs in sft_conversations(rng, n, exclude)]


ALPACA_TASKS = {
    "class": ["Name the drug class of the medication below.",
              "Classify this drug pharmacologically."],
    "use": ["List the main indications of the drug below.", "What is this drug used for?"],
    "mechanism": ["Explain the mechanism of action of this drug in one or two sentences."],
    "adverse": ["List the important adverse effects of this drug."],
    "first_line": ["Give the first-line treatment for the condition below."],
    "diagnosis": ["Explain how the condition below is diagnosed."],
    "symptoms": ["Describe the typical presentation of this condition."],
}


def _alpaca_record(rng: random.Random) -> dict:
    kind, rec = rng.choice(_entities())
    questions = DRUG_QUESTIONS if kind == "drug" else CONDITION_QUESTIONS
    answer = _drug_answer if kind == "drug" else _condition_answer
    topic = rng.choice([t for t in questions if t not in ("note", "overview")])
    question = rng.choice(questions[topic][0]).format(name=rec["name"])
    style = rng.random()
    if style < 0.45:
        instruction, inp = question, ""
    elif style < 0.7:
        instruction = rng.choice(["Answer the question below briefly and accurately.",
                                  "Answer this medical question in one to three sentences."])
        inp = question
    elif topic in ALPACA_TASKS:
        instruction, inp = rng.choice(ALPACA_TASKS[topic]), rec["name"]
    else:
        instruction, inp = question, ""
    return {"instruction": instruction, "input": inp, "output": answer(rng, rec, topic)}


def _alpaca_key(rec: dict) -> tuple:
    return (rec["instruction"], rec["input"], rec["output"])


def sft_alpaca_records(rng: random.Random, n: int, exclude: frozenset = frozenset()) -> list[dict]:
    """{"instruction", "input" ("" or the drug/condition or the question), "output"}."""
    return _distinct(rng, n, lambda r, i: _alpaca_record(r), _alpaca_key, exclude, "alpaca")


# ---------------------------------------------------------------------------
# Preference pairs and KTO labels
# ---------------------------------------------------------------------------

def _pref_key(rec: dict) -> tuple:
    """Distinct (chosen, rejected) answer pairs, whatever the prompt wording."""
    return (rec["chosen"], rec["rejected"])


def preference_records(rng: random.Random, n: int, exclude: frozenset = frozenset()) -> list[dict]:
    """{"prompt", "chosen", "rejected"}: same answer template, true vs wrong value."""
    claim = _planned_claims(_claim_order(rng, n))

    def draw(r, i):
        c = claim(r, i)
        return {"prompt": c["prompt"], "chosen": c["true"], "rejected": c["wrong"]}
    return _distinct(rng, n, draw, _pref_key, exclude, "preference")


def _pm_key(rec: dict) -> tuple:
    return (rec["chosen"][-1]["content"], rec["rejected"][-1]["content"])


def preference_messages_records(rng: random.Random, n: int,
                                exclude: frozenset = frozenset()) -> list[dict]:
    """{"chosen": [...messages], "rejected": [...messages]}: the same prompt messages, then
    the true or the wrong assistant answer. Some rows start with a system message, some
    with an earlier, accurate exchange about the same drug or condition."""
    claim = _planned_claims(_claim_order(rng, n))

    def draw(r, i):
        c = claim(r, i)
        subject = DRUG_BY_NAME.get(c["subject"]) or CONDITION_BY_NAME[c["subject"]]
        prefix = []
        if r.random() < 0.3:
            prefix.append({"role": "system", "content": r.choice(SYSTEM_PROMPTS)})
        if r.random() < 0.25:
            kind = "drug" if subject["name"] in DRUG_BY_NAME else "condition"
            questions = DRUG_QUESTIONS if kind == "drug" else CONDITION_QUESTIONS
            answer = _drug_answer if kind == "drug" else _condition_answer
            topic = r.choice([t for t in questions if t != "note"])
            prefix += [{"role": "user", "content": r.choice(questions[topic][0]).format(
                           name=subject["name"])},
                       {"role": "assistant", "content": answer(r, subject, topic)}]
        prefix.append({"role": "user", "content": c["prompt"]})
        return {"chosen": prefix + [{"role": "assistant", "content": c["true"]}],
                "rejected": prefix + [{"role": "assistant", "content": c["wrong"]}]}
    return _distinct(rng, n, draw, _pm_key, exclude, "preference_messages")


def _kto_key(rec: dict) -> tuple:
    """Distinct (completion, label), whatever the prompt wording."""
    return (rec["completion"], rec["label"])


def kto_records(rng: random.Random, n: int, exclude: frozenset = frozenset()) -> list[dict]:
    """{"prompt", "completion", "label"}: half true answers (label true), half wrong ones."""
    claim = _planned_claims(_claim_order(rng, n))
    labels = [i % 2 == 0 for i in range(n)]
    rng.shuffle(labels)

    def draw(r, i):
        c = claim(r, i)
        return {"prompt": c["prompt"], "completion": c["true"] if labels[i] else c["wrong"],
                "label": labels[i]}
    return _distinct(rng, n, draw, _kto_key, exclude, "KTO")


# ---------------------------------------------------------------------------
# Multiple choice (MedQA layout)
# ---------------------------------------------------------------------------

MCQ_TYPES = ["drug_class", "which_drug", "indication", "first_line", "mechanism", "diagnosis"]
LETTERS = "ABCD"


def _mcq_item(rng: random.Random, qtype: str, answer_letter: str) -> dict:
    if qtype == "which_drug":  # the drug of a given class
        drug = rng.choice(DRUGS)
        question = rng.choice(["Which of the following drugs is {a}?",
                               "Which of the following medications is classified as {a}?"]
                              ).format(a=with_article(drug["drug_class"]))
        correct = drug["name"]
        pool = [d["name"] for d in DRUGS if not conflict(d["name"], drug["name"])]
        same_area = [x for x in pool if DRUG_AREA[x] == DRUG_AREA[drug["name"]]]
    else:
        subject = rng.choice(_claim_subjects(qtype))
        true, pool = claim_values(qtype, subject)
        correct = rng.choice(true)
        name = subject["name"]
        same_area = []
        if qtype == "drug_class":
            question = rng.choice(["{Name} belongs to which of the following drug classes?",
                                   "Which of the following best describes the drug class of {name}?"])
            same_area = [d["drug_class"] for d in DRUGS if DRUG_AREA[d["name"]] == DRUG_AREA[name]
                         and d["drug_class"] in pool]
        elif qtype == "indication":
            question = rng.choice(["{Name} is used for which of the following?",
                                   "Which of the following is an indication for {name}?"])
        elif qtype == "first_line":
            if rng.random() < 0.5:
                sym = join(sample_list(rng, subject["key_symptoms"],
                                       lo=min(2, len(subject["key_symptoms"]))))
                question = (f"A patient with {sym} is diagnosed with {name}. "
                            "Which of the following is a first-line treatment?")
            else:
                question = "Which of the following is a first-line treatment for {name}?"
        elif qtype == "mechanism":
            question = rng.choice(["What is the mechanism of action of {name}?",
                                   "Which of the following describes how {name} works?"])
        elif qtype == "diagnosis":
            question = rng.choice(["Which of the following establishes the diagnosis of {name}?",
                                   "How is the diagnosis of {name} made?"])
        question = question.format(Name=cap(name), name=name)
    pool = sorted(set(pool) - {correct})
    # Up to two distractors from the same therapeutic area when it has safe ones.
    near = [x for x in sorted(set(same_area)) if x in pool]
    k_near = min(len(near), rng.randint(0, 2))
    distractors = rng.sample(near, k_near)
    distractors += rng.sample([x for x in pool if x not in distractors], 3 - k_near)
    rng.shuffle(distractors)
    idx = LETTERS.index(answer_letter)
    values = distractors[:idx] + [correct] + distractors[idx:]
    if qtype == "mechanism":  # "is reduced inside bacteria ..." -> "Reduced inside bacteria ..."
        values = [v[3:] if v.startswith("is ") else v for v in values]
    options = {letter: cap(v) for letter, v in zip(LETTERS, values)}
    return {"question": question, "options": options, "answer": options[answer_letter],
            "answer_idx": answer_letter}


def _mcq_key(rec: dict) -> tuple:
    return (rec["question"], tuple(sorted(rec["options"].values())))


def mcq_records(rng: random.Random, n: int, exclude: frozenset = frozenset()) -> list[dict]:
    """{"question", "options": {"A".."D"}, "answer", "answer_idx"}: one true option and three
    clearly wrong ones of the same type; answer letters balanced over A-D."""
    letters = [LETTERS[i % 4] for i in range(n)]
    rng.shuffle(letters)
    types = [MCQ_TYPES[i % len(MCQ_TYPES)] for i in range(n)]
    rng.shuffle(types)
    return _distinct(rng, n, lambda r, i: _mcq_item(r, types[i], letters[i]), _mcq_key,
                     exclude, "MCQ")


# ---------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------

PRETRAIN_N, PRETRAIN_SEED = 600, 0
PRETRAIN_EVAL_N, PRETRAIN_EVAL_SEED = 60, 1
# Held-out files use the training seed + 1.
SFT_N, SFT_EVAL_N, SFT_SHAREGPT_SEED, SFT_MESSAGES_SEED = 400, 40, 10, 12
SFT_ALPACA_N, SFT_ALPACA_SEED = 200, 14
PREFERENCE_N, PREFERENCE_EVAL_N, PREFERENCE_SEED = 600, 60, 20
PREFERENCE_MESSAGES_N, PREFERENCE_MESSAGES_SEED = 200, 22
KTO_N, KTO_EVAL_N, KTO_SEED = 600, 60, 30
MCQ_N, MCQ_SEED = 200, 40


def build_all() -> dict[str, list[dict]]:
    """Every output file name -> its records (nothing written)."""
    validate()
    train = pretrain_docs(random.Random(PRETRAIN_SEED), PRETRAIN_N)
    held_out = pretrain_docs(random.Random(PRETRAIN_EVAL_SEED), PRETRAIN_EVAL_N,
                             exclude=frozenset(d["text"] for d in train))
    out = {
        "pretrain.jsonl": train,
        "pretrain_eval.jsonl": held_out,
    }
    validate_claims()
    # SFT: two layouts of the same kind of conversation, plus Alpaca triples.
    sharegpt = sft_sharegpt_records(random.Random(SFT_SHAREGPT_SEED), SFT_N)
    messages = sft_messages_records(random.Random(SFT_MESSAGES_SEED), SFT_N)
    sft_train = frozenset(_conv_key(r["messages"]) for r in messages) | frozenset(
        _conv_key([{"role": _SHAREGPT_ROLE[t["from"]], "content": t["value"]}
                   for t in r["conversations"]]) for r in sharegpt)
    out["sft_sharegpt.jsonl"] = sharegpt
    out["sft_sharegpt_eval.jsonl"] = sft_sharegpt_records(
        random.Random(SFT_SHAREGPT_SEED + 1), SFT_EVAL_N, exclude=sft_train,
        id_prefix="medjax-sft-eval")
    out["sft_messages.jsonl"] = messages
    out["sft_messages_eval.jsonl"] = sft_messages_records(
        random.Random(SFT_MESSAGES_SEED + 1), SFT_EVAL_N, exclude=sft_train)
    out["sft_alpaca.jsonl"] = sft_alpaca_records(random.Random(SFT_ALPACA_SEED), SFT_ALPACA_N)
    # Preference pairs: no held-out (chosen, rejected) pair occurs in a training file.
    pref = preference_records(random.Random(PREFERENCE_SEED), PREFERENCE_N)
    pref_eval = preference_records(random.Random(PREFERENCE_SEED + 1), PREFERENCE_EVAL_N,
                                   exclude=frozenset(map(_pref_key, pref)))
    out["preference.jsonl"] = pref
    out["preference_eval.jsonl"] = pref_eval
    out["preference_messages.jsonl"] = preference_messages_records(
        random.Random(PREFERENCE_MESSAGES_SEED), PREFERENCE_MESSAGES_N,
        exclude=frozenset(map(_pref_key, pref_eval)))
    # KTO: no held-out (completion, label) occurs in the training file.
    kto = kto_records(random.Random(KTO_SEED), KTO_N)
    out["kto.jsonl"] = kto
    out["kto_eval.jsonl"] = kto_records(random.Random(KTO_SEED + 1), KTO_EVAL_N,
                                        exclude=frozenset(map(_kto_key, kto)))
    out["mcq.jsonl"] = mcq_records(random.Random(MCQ_SEED), MCQ_N)
    return out


def write_jsonl(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main(out_dir: str = HERE) -> None:
    for name, records in build_all().items():
        path = os.path.join(out_dir, name)
        write_jsonl(path, records)
        with open(path, "rb") as f:
            data = f.read()
        print(f"{name}: {len(records)} records, {len(data)} bytes, "
              f"sha256 {hashlib.sha256(data).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
