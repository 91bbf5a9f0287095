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
  bench/medqa_4options.jsonl                      {"id", "sent1", "sent2", "ending0".."ending3",
                                                   "label"}
  bench/medmcqa.jsonl                             {"id", "question", "opa".."opd", "cop" (0-3), ...}
  bench/pubmedqa.jsonl                            {"QUESTION", "CONTEXTS", "LABELS",
                                                   "final_decision", "LONG_ANSWER"}
  bench/mmlu/<subject>.jsonl                      {"question", "subject", "choices", "answer"}
  bench/alt/*.jsonl                               MedQA, PubMedQA, MedMCQA (cop 1-4): other layouts

Each ``*_eval`` file comes from another seed (the training seed + 1) and shares
no record with its training file (for preference pairs: no (chosen, rejected)
pair; for KTO: no (completion, label)). Preference, KTO and multiple-choice rows
pair a fact from facts.py with a wrong fact of the same type; which wrong facts
are safely wrong is decided by distractors.py. The bench/ files are small
stand-ins for medical benchmarks in their public layouts, so that
``python -m medjax.evaluate`` runs out of the box; scores on them say nothing
about the real benchmarks.

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


def option_values(rng: random.Random, correct: str, pool: list[str], same_area: list[str],
                  idx: int) -> list[str]:
    """Four option values: ``correct`` at position ``idx`` and three distractors from
    ``pool`` (safely wrong values), up to two of them from ``same_area`` when it has safe
    ones."""
    pool = sorted(set(pool) - {correct})
    near = [x for x in sorted(set(same_area)) if x in pool]
    k_near = min(len(near), rng.randint(0, 2))
    distractors = rng.sample(near, k_near)
    distractors += rng.sample([x for x in pool if x not in distractors], 3 - k_near)
    rng.shuffle(distractors)
    return distractors[:idx] + [correct] + distractors[idx:]


def mechanism_option(mech: str) -> str:
    """A mechanism phrase as an option: "is reduced inside bacteria ..." -> "reduced inside
    bacteria ..." (capitalized by the caller)."""
    return mech[3:] if mech.startswith("is ") else mech


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
    values = option_values(rng, correct, pool, same_area, LETTERS.index(answer_letter))
    if qtype == "mechanism":
        values = [mechanism_option(v) for v in values]
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
# Benchmark samples (bench/): MedQA, MedMCQA, PubMedQA and MMLU layouts
# ---------------------------------------------------------------------------
# Small stand-ins for the public benchmarks, so `python -m medjax.evaluate` runs
# out of the box. Every question is built from facts.py; distractors come from
# claim_values / conflict / DRUG_AREA as in mcq.jsonl, or from the rules below.
# Internally an item is {"qtype", "subject", "question", "values" (4 option texts),
# "gold" (0-3), "exp", "key"}; each writer lays items out in one benchmark's layout.

# Organ systems as body systems (MMLU anatomy). Psychiatric conditions are left out
# there: "psychiatric" is not a body system.
BODY_SYSTEMS = {
    "endocrine": "the endocrine system", "cardiovascular": "the cardiovascular system",
    "respiratory": "the respiratory system", "gastrointestinal": "the digestive system",
    "genitourinary": "the genitourinary system", "neurological": "the nervous system",
    "musculoskeletal": "the musculoskeletal system", "hematologic": "the hematologic system",
    "dermatologic": "the integumentary system",
}
# Hypercholesterolemia is a metabolic finding more than a disorder of one body system;
# the pancreas is also a digestive gland, so "the digestive system" is not clearly wrong
# for diabetes.
BODY_SYSTEM_SKIP = {"hypercholesterolemia"}
BODY_SYSTEM_NOT_WRONG = {("type 1 diabetes", "gastrointestinal"),
                         ("type 2 diabetes", "gastrointestinal")}

# Key symptoms specific enough to be a wrong answer to "a typical feature of X?" for a
# condition of an unrelated organ system (generic ones such as fatigue, fever, nausea,
# headache, cough or breathlessness are never used, as answers or as distractors).
SPECIFIC_FEATURES = [
    "increased thirst", "cold intolerance", "heat intolerance", "orthopnea",
    "ankle swelling", "an irregularly irregular pulse",
    "chest pain on exertion that is relieved by rest", "unilateral leg swelling", "calf pain",
    "episodic wheeze", "sputum production", "hemoptysis", "night sweats", "loud snoring",
    "witnessed pauses in breathing", "heartburn", "regurgitation", "epigastric pain",
    "black stools from bleeding", "watery diarrhea", "painful urination", "suprapubic pain",
    "a weak urinary stream", "nocturia", "persistent low mood", "loss of interest or pleasure",
    "excessive worry", "episodes of elevated mood", "hallucinations", "delusions",
    "disorganized speech", "recurrent unprovoked seizures", "resting tremor", "bradykinesia",
    "throbbing one-sided headache", "sensitivity to light", "progressive memory loss",
    "neck stiffness", "involvement of the big toe", "symmetrical swelling of small joints",
    "morning stiffness lasting over an hour", "pallor",
    "a painful vesicular rash in one dermatome",
]
# (condition, feature) pairs kept out although the organ systems differ: the feature
# does occur in the condition, or is easily confused with one of its features.
FEATURE_NOT_WRONG = {
    ("Graves disease", "watery diarrhea"),          # frequent loose stools in hyperthyroidism
    ("Graves disease", "night sweats"),             # sweating with heat intolerance
    ("hypothyroidism", "progressive memory loss"),  # slowed thinking, poor memory
    ("hypothyroidism", "persistent low mood"),
    ("hypothyroidism", "loss of interest or pleasure"),
    ("hypothyroidism", "ankle swelling"),           # myxedema
    ("hypothyroidism", "morning stiffness lasting over an hour"),  # hypothyroid myopathy
    ("hypothyroidism", "loud snoring"),             # sleep apnea is more common
    ("hypothyroidism", "pallor"),
    ("hypothyroidism", "bradykinesia"),             # slowed movement
    ("Graves disease", "nocturia"),                 # polyuria
    ("Graves disease", "sensitivity to light"),     # thyroid eye disease
    ("type 2 diabetes", "nocturia"),                # polyuria
    ("type 1 diabetes", "nocturia"),
    ("type 2 diabetes", "night sweats"),            # nocturnal hypoglycemia on treatment
    ("type 1 diabetes", "night sweats"),
    ("heart failure with reduced ejection fraction", "nocturia"),
    ("heart failure with reduced ejection fraction", "increased thirst"),
    ("heart failure with reduced ejection fraction", "cold intolerance"),  # cold peripheries
    ("atrial fibrillation", "nocturia"),
    ("stable angina", "heartburn"),                 # angina can be felt as indigestion
    ("obstructive sleep apnea", "nocturia"),
    ("obstructive sleep apnea", "persistent low mood"),
    ("obstructive sleep apnea", "loss of interest or pleasure"),
    ("gastroesophageal reflux disease", "episodic wheeze"),  # reflux-related wheeze
    ("Parkinson disease", "nocturia"),              # autonomic features
    ("Parkinson disease", "night sweats"),
    ("Parkinson disease", "heat intolerance"),
    ("iron deficiency anemia", "cold intolerance"),
}

# Condition pairs never offered as each other's wrong diagnosis although their table
# symptoms differ: one is a usual differential or a cause of the other's presentation.
DX_NOT_WRONG = [
    ("acute coronary syndrome", "gastroesophageal reflux disease"),
    ("stable angina", "gastroesophageal reflux disease"),
    ("asthma", "gastroesophageal reflux disease"),        # reflux-related cough and wheeze
    ("chronic obstructive pulmonary disease", "gastroesophageal reflux disease"),
    ("atrial fibrillation", "generalized anxiety disorder"),  # palpitations
    ("pulmonary embolism", "generalized anxiety disorder"),   # panic-like breathlessness
    ("pulmonary embolism", "Graves disease"),                 # tachycardia
    ("asthma", "generalized anxiety disorder"),
    ("obstructive sleep apnea", "hypothyroidism"),
    ("Alzheimer disease", "hypothyroidism"),                  # a reversible cause of dementia
]

# First-line drugs for one condition that the fact table lists side by side without
# ranking them: "Is A more effective than B for X?" is left open ("maybe") by the table.
COMPARABLE_FIRST_LINE = {
    "hypertension": ["lisinopril", "amlodipine", "hydrochlorothiazide"],
    "generalized anxiety disorder": ["sertraline", "venlafaxine"],
    "gout": ["colchicine", "ibuprofen"],
    "pulmonary embolism": ["apixaban", "heparin"],
}


def join_clear(items: list[str]) -> str:
    """``join``, with a comma before "and" also for two items when one of them holds an
    "and" or a clause ("redness and swelling, and involvement of the big toe")."""
    if len(items) == 2 and any(" and " in x or " that " in x for x in items):
        return f"{items[0]}, and {items[1]}"
    return join(items)


def _far(a: dict, b: dict) -> bool:
    """Conditions of organ systems that are not near each other, both ways round."""
    return a["organ_system"] not in _near_systems(b) and b["organ_system"] not in _near_systems(a)


def _symptomatic() -> list[dict]:
    return [c for c in CONDITIONS if not c.get("asymptomatic")]


def wrong_diagnoses(cond: dict) -> list[str]:
    """Conditions that are clearly not the diagnosis of a patient with ``cond``'s symptoms:
    another, unrelated organ system and no key symptom in common (by word stem)."""
    return [c["name"] for c in CONDITIONS
            if c is not cond and _far(c, cond)
            and not related(c["key_symptoms"], cond["key_symptoms"])
            and (c["name"], cond["name"]) not in DX_NOT_WRONG
            and (cond["name"], c["name"]) not in DX_NOT_WRONG]


def wrong_features(cond: dict) -> list[str]:
    """Specific key symptoms of unrelated conditions that are clearly not features of ``cond``."""
    out = []
    for other in CONDITIONS:
        if other is cond or not _far(other, cond):
            continue
        for s in other["key_symptoms"]:
            if (s in SPECIFIC_FEATURES and s not in out
                    and (cond["name"], s) not in FEATURE_NOT_WRONG
                    and not related([s], cond["key_symptoms"])):
                out.append(s)
    return out


def wrong_mechanism_drugs(drug: dict) -> list[str]:
    """Drugs that clearly do not act by ``drug``'s mechanism (other area, no conflict)."""
    return [d["name"] for d in DRUGS
            if DRUG_AREA[d["name"]] != DRUG_AREA[drug["name"]]
            and not conflict(d["name"], drug["name"]) and d["mechanism"] != drug["mechanism"]]


def _bench_subjects(qtype: str) -> list:
    """Subjects of a benchmark question type (a drug, a condition, or (condition, drug))."""
    if qtype in ("which_drug", "which_mechanism"):
        return list(DRUGS)
    if qtype == "dx":
        return _symptomatic()
    if qtype == "feature":
        return [c for c in _symptomatic() if any(s in SPECIFIC_FEATURES for s in c["key_symptoms"])]
    if qtype == "body_system":
        return [c for c in CONDITIONS
                if c["organ_system"] in BODY_SYSTEMS and c["name"] not in BODY_SYSTEM_SKIP]
    if qtype == "first_line_vignette":
        return _claim_subjects("first_line")
    if qtype == "first_line_mechanism":
        return [(c, DRUG_BY_NAME[x]) for c in _claim_subjects("first_line")
                for x in c["first_line"] if x in DRUG_BY_NAME]
    return _claim_subjects(qtype)


# Question templates: style -> question type -> (templates for a condition with symptoms,
# templates for an asymptomatic condition or for a drug). Placeholders: {Name}/{name} the
# subject, {sym} some of its key symptoms, {drug} a first-line drug, {a_class} a drug
# class with its article, {mech} a mechanism.
BENCH_TEMPLATES = {
    "vignette": {
        "dx": (["A patient presents with {sym}. Which of the following is the most likely "
                "diagnosis?",
                "A patient comes to the clinic because of {sym}. Which of the following is the "
                "most likely diagnosis?"], None),
        "first_line": (["A patient with {sym} is diagnosed with {name}. Which of the following "
                        "is a first-line treatment?",
                        "A patient presents with {sym}, and {name} is diagnosed. Which of the "
                        "following drugs is an appropriate first-line treatment?"],
                       ["A patient has just been diagnosed with {name}. Which of the following "
                        "drugs is an appropriate first-line treatment?"]),
        "diagnosis": (["A patient presents with {sym}, and {name} is suspected. Which of the "
                       "following establishes the diagnosis?",
                       "A patient with {sym} is thought to have {name}. Which of the following "
                       "investigations confirms the diagnosis?"],
                      ["A patient is thought to have {name}. Which of the following "
                       "establishes the diagnosis?"]),
        "first_line_mechanism": (["A patient with {sym} is diagnosed with {name} and started on "
                                  "{drug}. Which of the following is the mechanism of action of "
                                  "this drug?",
                                  "A patient with {name} is started on {drug}. Which of the "
                                  "following best describes how this drug works?"],
                                 ["A patient with {name} is started on {drug}. Which of the "
                                  "following best describes how this drug works?"]),
    },
    "terse": {
        "drug_class": (None, ["{Name} belongs to which class of drugs?",
                              "{Name} is classified as:"]),
        "which_drug": (None, ["Which of the following drugs is {a_class}?",
                              "{A_class} among the following is:"]),
        "mechanism": (None, ["Which of the following is the mechanism of action of {name}?",
                             "How does {name} act?"]),
        "indication": (None, ["{Name} is indicated for:",
                              "Which of the following is an indication for {name}?"]),
        "first_line": (["A first-line drug for {name} is:",
                        "Which of the following is a first-line drug for {name}?"],) * 2,
        "diagnosis": (["Diagnosis of {name} is established by:",
                       "Which investigation establishes the diagnosis of {name}?"],) * 2,
        "dx": (["A patient presents with {sym}. The most likely diagnosis is:",
                "A patient has {sym}. What is the most likely diagnosis?"], None),
        "organ_system": (["{Name} is classified as which type of disorder?",
                          "Which type of disorder is {name}?"],) * 2,
    },
    "mmlu": {
        "body_system": (["{Name} is primarily a disorder of which of the following body systems?",
                         "Which body system is chiefly affected in {name}?"],) * 2,
        "first_line": (["Which of the following is a first-line treatment for {name}?",
                        "Which of the following drugs is commonly used as first-line therapy "
                        "for {name}?"],) * 2,
        "diagnosis": (["Which of the following is used to establish the diagnosis of {name}?",
                       "The diagnosis of {name} is usually made by:"],) * 2,
        "mechanism": (None, ["What is the mechanism of action of {name}?",
                             "Which of the following best describes how {name} acts?"]),
        "which_mechanism": (None, ["Which of the following drugs {mech}?",
                                   "A drug that {mech} is:"]),
        "drug_class": (None, ["{Name} belongs to which of the following drug classes?",
                              "Which of the following best describes the drug class of {name}?"]),
        "indication": (None, ["{Name} is used for which of the following?",
                              "Which of the following is an indication for {name}?"]),
        "feature": (["Which of the following is a typical feature of {name}?",
                     "Which of the following findings is characteristic of {name}?"], None),
    },
}
BENCH_TEMPLATES["mmlu"]["dx"] = BENCH_TEMPLATES["vignette"]["dx"]
BENCH_TEMPLATES["mmlu"]["first_line_vignette"] = BENCH_TEMPLATES["vignette"]["first_line"]


def _explain(qtype: str, subject: dict, drug: dict | None = None) -> str:
    """One accurate sentence about the fact a question tests (MedMCQA's ``exp``)."""
    if qtype in ("drug_class", "which_drug", "which_mechanism"):
        return (f"{cap(subject['name'])} is {with_article(subject['drug_class'])} that "
                f"{subject['mechanism']}.")
    if qtype == "mechanism":
        return (f"{cap(subject['name'])}, {with_article(subject['drug_class'])}, "
                f"{subject['mechanism']}.")
    if qtype == "indication":
        return (f"{cap(subject['name'])} is {with_article(subject['drug_class'])} used for "
                f"{join(subject['indications'])}.")
    name, Name = subject["name"], cap(subject["name"])
    if qtype in ("first_line", "first_line_vignette"):
        fl = subject["first_line"]
        return (f"First-line treatment for {name} {'is' if len(fl) == 1 else 'includes'} "
                f"{join(fl)}.")
    if qtype == "first_line_mechanism":
        return (f"{cap(drug['name'])}, {with_article(drug['drug_class'])} used first-line for "
                f"{name}, {drug['mechanism']}.")
    if qtype == "diagnosis":
        return f"The diagnosis of {name} is based on {subject['diagnostic_test']}."
    if qtype in ("dx", "feature"):
        return f"{Name} typically presents with {join_clear(subject['key_symptoms'])}."
    if qtype in ("organ_system", "body_system"):
        return f"{Name} is {with_article(subject['organ_system'])} condition."
    raise ValueError(qtype)


def _bench_item(rng: random.Random, style: str, qtype: str, gold: int) -> dict:
    """One four-option question of ``qtype`` worded in ``style``, correct option at ``gold``."""
    subject = rng.choice(_bench_subjects(qtype))
    drug = None
    same_area: list[str] = []
    ctype = "first_line" if qtype == "first_line_vignette" else qtype
    if qtype == "first_line_mechanism":
        subject, drug = subject
        correct, pool = drug["mechanism"], wrong_mechanisms(drug)
    elif qtype == "which_drug":
        correct = subject["name"]
        pool = [d["name"] for d in DRUGS if not conflict(d["name"], correct)]
        same_area = [x for x in pool if DRUG_AREA[x] == DRUG_AREA[correct]]
    elif qtype == "which_mechanism":
        correct, pool = subject["name"], wrong_mechanism_drugs(subject)
    elif qtype == "dx":
        correct, pool = subject["name"], wrong_diagnoses(subject)
    elif qtype == "feature":
        correct = rng.choice([s for s in subject["key_symptoms"] if s in SPECIFIC_FEATURES])
        pool = wrong_features(subject)
    elif qtype == "body_system":
        true, pool = claim_values("organ_system", subject)
        correct, pool = true[0], [s for s in pool if s in BODY_SYSTEMS
                                  and (subject["name"], s) not in BODY_SYSTEM_NOT_WRONG]
    else:
        true, pool = claim_values(ctype, subject)
        correct = rng.choice(true)
        if qtype == "drug_class":
            same_area = [d["drug_class"] for d in DRUGS
                         if DRUG_AREA[d["name"]] == DRUG_AREA[subject["name"]]
                         and d["drug_class"] in pool]
    with_sym, without_sym = BENCH_TEMPLATES[style][qtype]
    is_drug = subject["name"] in DRUG_BY_NAME
    templates = with_sym if not is_drug and not subject.get("asymptomatic") else without_sym
    sym = ""
    if not is_drug:
        symptoms = subject["key_symptoms"]
        shown = sample_list(rng, symptoms, lo=min(3, len(symptoms)))
        specific = [x for x in symptoms if x in SPECIFIC_FEATURES]
        if qtype == "dx" and specific and not set(shown) & set(specific):
            # a diagnosis vignette always shows one of the condition's specific features
            shown = [x for x in symptoms if x in shown or x == specific[0]]
        sym = join_clear(shown)
    fields = {"Name": cap(subject["name"]), "name": subject["name"], "sym": sym,
              "drug": drug["name"] if drug else "",
              "a_class": with_article(subject["drug_class"]) if is_drug else "",
              "A_class": cap(with_article(subject["drug_class"])) if is_drug else "",
              "mech": subject["mechanism"] if is_drug else ""}
    question = rng.choice(templates).format(**fields)
    values = option_values(rng, correct, pool, same_area, gold)
    if qtype in ("mechanism", "first_line_mechanism"):
        values = [mechanism_option(v) for v in values]
    elif qtype == "body_system":
        values = [BODY_SYSTEMS[v] for v in values]
    return {"qtype": qtype, "subject": subject["name"], "question": question,
            "values": [cap(v) for v in values], "gold": gold,
            "exp": _explain(qtype, subject, drug),
            "key": (qtype, subject["name"], drug["name"] if drug else "")}


def balanced_golds(rng: random.Random, n: int) -> list[int]:
    """Gold positions 0-3 in equal shares (within one when 4 does not divide n), shuffled."""
    golds = [i % 4 for i in range(n)]
    rng.shuffle(golds)
    return golds


def bench_items(rng: random.Random, n: int, style: str, qtypes: list[str],
                exclude: frozenset = frozenset(), golds: list[int] | None = None) -> list[dict]:
    """``n`` items with question types in equal shares and the gold position balanced over
    A-D (or ``golds``); no (type, subject) twice, nor one in ``exclude``."""
    golds = balanced_golds(rng, n) if golds is None else golds
    types = [qtypes[i % len(qtypes)] for i in range(n)]
    rng.shuffle(types)
    return _distinct(rng, n, lambda r, i: _bench_item(r, style, types[i], golds[i]),
                     lambda item: item["key"], exclude, f"{style} benchmark")


MEDQA_TYPES = ["dx", "first_line", "diagnosis", "first_line_mechanism"]
MEDMCQA_TYPES = {"Pharmacology": ["drug_class", "which_drug", "mechanism", "indication"],
                 "Medicine": ["first_line", "diagnosis", "dx", "organ_system"]}
MMLU_TYPES = {
    "anatomy": ["body_system"],
    "clinical_knowledge": ["first_line", "diagnosis"],
    "college_biology": ["mechanism", "which_mechanism"],
    "college_medicine": ["drug_class", "indication"],
    "medical_genetics": ["feature"],  # facts.py has no genetics: typical features instead
    "professional_medicine": ["dx", "first_line_vignette"],
}


def medqa_hf_records(items: list[dict], id_prefix: str = "medjax-medqa") -> list[dict]:
    """lm-eval's MedQA layout (GBaker/MedQA-USMLE-4-options-hf)."""
    out = []
    for i, it in enumerate(items):
        rec = {"id": f"{id_prefix}-{i:04d}", "sent1": it["question"], "sent2": ""}
        rec.update({f"ending{j}": v for j, v in enumerate(it["values"])})
        rec["label"] = it["gold"]
        out.append(rec)
    return out


def medqa_original_records(items: list[dict]) -> list[dict]:
    """The original MedQA JSONL layout (4-option US set)."""
    out = []
    for it in items:
        options = dict(zip(LETTERS, it["values"]))
        out.append({"question": it["question"], "options": options,
                    "answer": it["values"][it["gold"]], "answer_idx": LETTERS[it["gold"]],
                    "meta_info": "step1"})
    return out


def medmcqa_items(rng: random.Random, n: int, exclude: frozenset = frozenset()) -> list[dict]:
    """Half Pharmacology, half Medicine questions, MedMCQA's short style."""
    half = n // 2
    golds = balanced_golds(rng, n)  # balanced over the whole file
    pharm = bench_items(rng, half, "terse", MEDMCQA_TYPES["Pharmacology"], exclude, golds[:half])
    med = bench_items(rng, n - half, "terse", MEDMCQA_TYPES["Medicine"], exclude, golds[half:])
    for it in pharm:
        it["subject_name"] = "Pharmacology"
    for it in med:
        it["subject_name"] = "Medicine"
    # Interleave the two subjects in a fixed shuffled order.
    items = pharm + med
    rng.shuffle(items)
    return items


def medmcqa_records(items: list[dict], cop_base: int = 0,
                    id_prefix: str = "medjax-medmcqa") -> list[dict]:
    """MedMCQA's layout; ``cop`` 0-3 (Hugging Face copy, cop_base 0) or 1-4 (the original
    release, cop_base 1)."""
    out = []
    for i, it in enumerate(items):
        rec = {"id": f"{id_prefix}-{i:04d}", "question": it["question"]}
        rec.update({f"op{c}": v for c, v in zip("abcd", it["values"])})
        rec.update({"cop": it["gold"] + cop_base, "choice_type": "single", "exp": it["exp"],
                    "subject_name": it["subject_name"], "topic_name": ""})
        out.append(rec)
    return out


def mmlu_records(items: list[dict], subject: str) -> list[dict]:
    """MMLU's layout (cais/mmlu): answer is the 0-based index of the correct choice."""
    return [{"question": it["question"], "subject": subject, "choices": it["values"],
             "answer": it["gold"]} for it in items]


# PubMedQA: a yes/no/maybe question and 2-3 abstract-like sentences. "yes": the question
# states a true fact and a context sentence states it; "no": the question states a safely
# wrong value and a context sentence states the true one; "maybe": the question compares
# two first-line drugs that the table lists side by side, and nothing in the contexts (or
# in facts.py) ranks them.
PUBMEDQA_TYPES = ["drug_class", "first_line", "diagnosis", "organ_system"]
PUBMEDQA_QUESTIONS = {
    "drug_class": ["Is {name} classified as {a_x}?", "Should {name} be regarded as {a_x}?"],
    "first_line": ["Is {x} a first-line treatment for {name}?",
                   "Is {x} recommended as first-line therapy for {name}?"],
    "diagnosis": ["Is {name} diagnosed by {x}?", "Can the diagnosis of {name} be made by {x}?"],
    "organ_system": ["Is {name} {a_x} disorder?", "Should {name} be classified as {a_x} disease?"],
    "compare": ["Is {x} more effective than {y} as first-line treatment for {name}?",
                "Does {x} work better than {y} as initial therapy for {name}?"],
}


def _condition_background(rng: random.Random, cond: dict) -> str:
    if cond.get("asymptomatic"):
        sym = join_clear(sample_list(rng, cond["key_symptoms"]))
        return f"{cap(cond['name'])} often causes no symptoms and is usually found through {sym}."
    sym = join_clear(sample_list(rng, cond["key_symptoms"], lo=min(2, len(cond["key_symptoms"]))))
    return rng.choice([f"Patients with {cond['name']} commonly present with {sym}.",
                       f"{cap(cond['name'])} is characterized by {sym}."])


def _first_line_sentence(cond: dict) -> str:
    fl = cond["first_line"]
    verb = "is" if len(fl) == 1 else "includes"
    return f"First-line treatment for {cond['name']} {verb} {join(fl)}."


def _pubmedqa_item(rng: random.Random, decision: str, ctype: str) -> dict:
    if decision == "maybe":
        cond_name = rng.choice(sorted(COMPARABLE_FIRST_LINE))
        cond = CONDITION_BY_NAME[cond_name]
        x, y = rng.sample(COMPARABLE_FIRST_LINE[cond_name], 2)
        dx, dy = DRUG_BY_NAME[x], DRUG_BY_NAME[y]
        question = rng.choice(PUBMEDQA_QUESTIONS["compare"]).format(name=cond_name, x=x, y=y)
        contexts = [_condition_background(rng, cond), _first_line_sentence(cond)]
        if rng.random() < 0.6:
            contexts.append(f"{cap(x)} is {with_article(dx['drug_class'])}, and {y} is "
                            f"{with_article(dy['drug_class'])}.")
        long_answer = (f"{cap(x)} and {y} are both first-line treatments for {cond_name}, but "
                       "this does not show whether one is more effective than the other.")
        return {"key": ("compare", cond_name, x, y), "question": question,
                "contexts": contexts, "decision": decision, "long_answer": long_answer}
    subject = rng.choice(_claim_subjects(ctype))
    true, wrong = claim_values(ctype, subject)
    t = rng.choice(true)
    asked = t if decision == "yes" else rng.choice(wrong)
    name, Name = subject["name"], cap(subject["name"])
    question = rng.choice(PUBMEDQA_QUESTIONS[ctype]).format(
        name=name, x=asked, a_x=with_article(asked))
    if ctype == "drug_class":
        uses = join(subject["indications"])
        contexts = [rng.choice([f"{Name} is used for {uses}.",
                                f"{Name} is widely prescribed for {uses}."]),
                    rng.choice([f"{Name} is {with_article(t)}.",
                                f"Pharmacologically, {name} is {with_article(t)}."])]
        if rng.random() < 0.5:
            contexts.append(f"It {subject['mechanism']}.")
        yes_answer = f"{Name} is {with_article(t)} used for {join(subject['indications'])}."
        no_answer = f"{Name} is not {with_article(asked)} but {with_article(t)}."
    elif ctype == "first_line":
        d = DRUG_BY_NAME[asked]
        contexts = [_condition_background(rng, subject), _first_line_sentence(subject),
                    f"{cap(asked)} is {with_article(d['drug_class'])} used for "
                    f"{join(d['indications'])}."]
        yes_answer = f"{cap(asked)} is a first-line treatment for {name}."
        no_answer = (f"{cap(asked)} is not a first-line treatment for {name}; first-line "
                     f"treatment {'is' if len(subject['first_line']) == 1 else 'includes'} "
                     f"{join(subject['first_line'])}.")
    elif ctype == "diagnosis":
        contexts = [_condition_background(rng, subject),
                    rng.choice([f"The diagnosis of {name} is based on {t}.",
                                f"Diagnosis of {name} relies on {t}."])]
        if rng.random() < 0.5:
            contexts.append(_first_line_sentence(subject))
        yes_answer = f"{Name} is diagnosed by {t}."
        no_answer = f"{Name} is not diagnosed by {asked}; the diagnosis is based on {t}."
    else:  # organ_system
        contexts = [f"{Name} is {with_article(t)} condition.", _condition_background(rng, subject)]
        if rng.random() < 0.5:
            contexts.append(_first_line_sentence(subject))
        yes_answer = f"{Name} is {with_article(t)} disorder."
        no_answer = f"{Name} is not {with_article(asked)} disorder but {with_article(t)} one."
    return {"key": (ctype, name, asked), "question": question, "contexts": contexts,
            "decision": decision, "long_answer": yes_answer if decision == "yes" else no_answer}


def pubmedqa_items(rng: random.Random, n_yes: int, n_no: int, n_maybe: int,
                   exclude: frozenset = frozenset()) -> list[dict]:
    decisions = ["yes"] * n_yes + ["no"] * n_no + ["maybe"] * n_maybe
    rng.shuffle(decisions)
    types = [PUBMEDQA_TYPES[i % len(PUBMEDQA_TYPES)] for i in range(len(decisions))]
    rng.shuffle(types)
    items = _distinct(rng, len(decisions),
                      lambda r, i: _pubmedqa_item(r, decisions[i], types[i]),
                      lambda it: it["key"], exclude, "PubMedQA")
    for it in items:  # first sentence sets the scene, the rest state the findings
        it["labels"] = ["BACKGROUND"] + ["RESULTS"] * (len(it["contexts"]) - 1)
    return items


def pubmedqa_bigbio_records(items: list[dict]) -> list[dict]:
    """PubMedQA in the bigbio source layout that lm-eval reads."""
    return [{"QUESTION": it["question"], "CONTEXTS": it["contexts"], "LABELS": it["labels"],
             "final_decision": it["decision"], "LONG_ANSWER": it["long_answer"]}
            for it in items]


def pubmedqa_flat_records(items: list[dict], first_pubid: int = 90000001) -> list[dict]:
    """PubMedQA flattened (pqa_labeled style). The ids start above every real PMID."""
    return [{"pubid": first_pubid + i, "question": it["question"],
             "context": {"contexts": it["contexts"], "labels": it["labels"]},
             "long_answer": it["long_answer"], "final_decision": it["decision"]}
            for i, it in enumerate(items)]


def _keys(items: list[dict]) -> frozenset:
    return frozenset(it["key"] for it in items)


def build_bench() -> dict[str, list[dict]]:
    """The bench/ files: name (relative to this folder) -> records."""
    out = {}
    medqa = bench_items(random.Random(MEDQA_SEED), MEDQA_N, "vignette", MEDQA_TYPES)
    out["bench/medqa_4options.jsonl"] = medqa_hf_records(medqa)
    medmcqa = medmcqa_items(random.Random(MEDMCQA_SEED), MEDMCQA_N)
    out["bench/medmcqa.jsonl"] = medmcqa_records(medmcqa, cop_base=0)
    pubmedqa = pubmedqa_items(random.Random(PUBMEDQA_SEED), *PUBMEDQA_DECISIONS)
    out["bench/pubmedqa.jsonl"] = pubmedqa_bigbio_records(pubmedqa)
    for k, (subject, qtypes) in enumerate(MMLU_TYPES.items()):
        items = bench_items(random.Random(MMLU_SEED + k), MMLU_N, "mmlu", qtypes)
        out[f"bench/mmlu/{subject}.jsonl"] = mmlu_records(items, subject)
    # Alternate layouts: other seeds, no item shared with the main file of the benchmark.
    out["bench/alt/medqa_4options.jsonl"] = medqa_original_records(bench_items(
        random.Random(ALT_MEDQA_SEED), ALT_N, "vignette", MEDQA_TYPES, exclude=_keys(medqa)))
    out["bench/alt/pubmedqa.jsonl"] = pubmedqa_flat_records(pubmedqa_items(
        random.Random(ALT_PUBMEDQA_SEED), *ALT_PUBMEDQA_DECISIONS, exclude=_keys(pubmedqa)))
    out["bench/alt/medmcqa.jsonl"] = medmcqa_records(medmcqa_items(
        random.Random(ALT_MEDMCQA_SEED), ALT_N, exclude=_keys(medmcqa)), cop_base=1,
        id_prefix="medjax-medmcqa-alt")
    return out


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
# Benchmark samples (bench/), seeds 50-61.
MEDQA_N, MEDQA_SEED = 40, 50
MEDMCQA_N, MEDMCQA_SEED = 40, 51
PUBMEDQA_DECISIONS, PUBMEDQA_SEED = (13, 12, 5), 52  # yes, no, maybe
MMLU_N, MMLU_SEED = 20, 53  # one seed per subject: 53-58, in MMLU_TYPES order
ALT_N, ALT_MEDQA_SEED, ALT_MEDMCQA_SEED = 20, 59, 61
ALT_PUBMEDQA_DECISIONS, ALT_PUBMEDQA_SEED = (9, 8, 3), 60


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
    out.update(build_bench())
    return out


def write_jsonl(path: str, records: list[dict]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")


def main(out_dir: str = HERE) -> None:
    for name, records in build_all().items():
        path = os.path.join(out_dir, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_jsonl(path, records)
        with open(path, "rb") as f:
            data = f.read()
        print(f"{name}: {len(records)} records, {len(data)} bytes, "
              f"sha256 {hashlib.sha256(data).hexdigest()[:16]}")


if __name__ == "__main__":
    main()
