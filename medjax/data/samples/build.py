"""Generate the bundled sample data files from the fact table in facts.py.

    python medjax/data/samples/build.py

writes, next to this file:

  pretrain.jsonl       {"text": ...} textbook-style documents (training)
  pretrain_eval.jsonl  the same kind of documents from another seed, none
                       identical to a training document (held-out wording,
                       same facts)

Output is deterministic: every generator takes its own ``random.Random(seed)``
and iterates over lists in a fixed order, so running the script twice gives
byte-identical files. Standard library only.

Adding a format (SFT messages, preference pairs, KTO labels, multiple choice):
write ``def <format>_records(rng, n) -> list[dict]`` next to ``pretrain_docs``,
built from DRUGS / CONDITIONS and the phrase helpers below, and add a line to
OUTPUTS. Changing facts.py or a template changes the files: rebuild and update
the counts in README.md.
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
    from .facts import CONDITIONS, DRUGS, NON_DRUG_MEASURES
else:  # pragma: no cover - script mode
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
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
# Writing
# ---------------------------------------------------------------------------

PRETRAIN_N, PRETRAIN_SEED = 600, 0
PRETRAIN_EVAL_N, PRETRAIN_EVAL_SEED = 60, 1


def build_all() -> dict[str, list[dict]]:
    """Every output file name -> its records (nothing written)."""
    validate()
    train = pretrain_docs(random.Random(PRETRAIN_SEED), PRETRAIN_N)
    held_out = pretrain_docs(random.Random(PRETRAIN_EVAL_SEED), PRETRAIN_EVAL_N,
                             exclude=frozenset(d["text"] for d in train))
    return {
        "pretrain.jsonl": train,
        "pretrain_eval.jsonl": held_out,
    }


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
