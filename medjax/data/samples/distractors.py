"""Which wrong answers are safely wrong: the knowledge behind rejected answers and distractors.

The preference, KTO and multiple-choice files pair a fact from ``facts.py``
with a *wrong* fact of the same type (another drug's class, a drug that is not
used for a condition, ...). A wrong answer that is in fact true (valproate is
"a mood stabilizer", warfarin is used for pulmonary embolism, propranolol for
anxiety) would teach a model the opposite of the truth, so candidates are
excluded generously:

* ``DRUG_AREA``: every drug's therapeutic area. A drug is never offered as a
  wrong treatment for a condition in its own area, nor a wrong indication or
  mechanism taken from a drug of its own area (same-area drugs are often used
  off-label for each other's conditions).
* ``CONFLICT_GROUPS``: drugs whose class or mechanism phrases could be true of
  each other (aspirin is an NSAID and an analgesic; lorazepam treats seizures).
  Drugs sharing a group never lend each other a wrong class or mechanism.
* ``EXTRA_USES``: real uses beyond the table's indications (approved or common
  off-label), and ``CONDITION_TERMS``: synonyms of each condition. A wrong
  indication or first-line drug is rejected when any word stem of it matches
  any stem of the drug's indications, extra uses, or the conditions it is
  first-line for.
* ``SYSTEM_NEAR`` / ``CONDITION_SYSTEM_NEAR``: organ systems that a condition
  could also reasonably be filed under; ``VAGUE_TEST``: diagnostic "tests" that
  are too general to be clearly wrong elsewhere ("the clinical history").

Over-exclusion only costs variety; the generator checks that every fact keeps
enough wrong candidates. Written for medjax; textbook-level, not clinical
guidance.
"""

from __future__ import annotations

import re

DRUG_AREA = {
    # endocrine and metabolic
    "metformin": "endocrine", "insulin glargine": "endocrine", "glipizide": "endocrine",
    "empagliflozin": "endocrine", "liraglutide": "endocrine", "levothyroxine": "endocrine",
    "methimazole": "endocrine", "prednisone": "endocrine",
    # bone and joint
    "allopurinol": "musculoskeletal", "colchicine": "musculoskeletal",
    "alendronate": "musculoskeletal", "methotrexate": "musculoskeletal",
    # cardiovascular
    "lisinopril": "cardiovascular", "amlodipine": "cardiovascular",
    "hydrochlorothiazide": "cardiovascular", "furosemide": "cardiovascular",
    "spironolactone": "cardiovascular", "metoprolol": "cardiovascular",
    "propranolol": "cardiovascular", "atorvastatin": "cardiovascular",
    "warfarin": "cardiovascular", "apixaban": "cardiovascular", "heparin": "cardiovascular",
    "aspirin": "cardiovascular", "clopidogrel": "cardiovascular", "digoxin": "cardiovascular",
    "amiodarone": "cardiovascular", "nitroglycerin": "cardiovascular",
    "sildenafil": "cardiovascular",
    # gastrointestinal
    "omeprazole": "gastrointestinal", "ondansetron": "gastrointestinal",
    # infection
    "amoxicillin": "infection", "ceftriaxone": "infection", "azithromycin": "infection",
    "ciprofloxacin": "infection", "nitrofurantoin": "infection",
    "trimethoprim-sulfamethoxazole": "infection", "vancomycin": "infection",
    "metronidazole": "infection", "isoniazid": "infection", "rifampin": "infection",
    "acyclovir": "infection", "oseltamivir": "infection", "fluconazole": "infection",
    # mental health
    "sertraline": "psychiatric", "venlafaxine": "psychiatric", "amitriptyline": "psychiatric",
    "lithium": "psychiatric", "haloperidol": "psychiatric", "olanzapine": "psychiatric",
    "lorazepam": "psychiatric",
    # airways
    "albuterol": "respiratory", "fluticasone": "respiratory", "tiotropium": "respiratory",
    # pain
    "ibuprofen": "pain", "acetaminophen": "pain", "morphine": "pain", "naloxone": "pain",
    # nervous system
    "levetiracetam": "neurological", "valproate": "neurological",
    "carbamazepine": "neurological", "levodopa-carbidopa": "neurological",
    "donepezil": "neurological", "sumatriptan": "neurological",
    # urology, hematology
    "tamsulosin": "genitourinary", "ferrous sulfate": "hematologic",
}

# Drug areas whose drugs count as plausible treatments for conditions of each
# organ system (the condition's own area, plus neighbours).
SYSTEM_AREAS = {
    "endocrine": {"endocrine"},
    "cardiovascular": {"cardiovascular"},
    "respiratory": {"respiratory"},
    "gastrointestinal": {"gastrointestinal"},
    "genitourinary": {"genitourinary"},
    "psychiatric": {"psychiatric", "neurological"},
    "neurological": {"neurological", "psychiatric", "pain"},
    "musculoskeletal": {"musculoskeletal", "pain"},
    "hematologic": {"hematologic"},
    "dermatologic": {"dermatologic"},
}

# Conditions caused by an infection: no anti-infective is offered as a wrong
# treatment for them (a wrong antibiotic may still be partly active).
INFECTIOUS = {
    "community-acquired pneumonia", "tuberculosis", "influenza",
    "Clostridioides difficile infection", "uncomplicated cystitis", "bacterial meningitis",
    "herpes zoster",
}
# Extra areas for single conditions.
CONDITION_EXTRA_AREAS = {
    "pulmonary embolism": {"cardiovascular"},
    "deep vein thrombosis": {"hematologic"},
    "heart failure with reduced ejection fraction": {"respiratory"},
    "obstructive sleep apnea": {"neurological"},
}

# Synonyms and related words for each condition (matched against drug uses).
CONDITION_TERMS = {
    "type 2 diabetes": ["diabetes", "glucose", "obesity"],
    "type 1 diabetes": ["diabetes", "glucose", "ketoacidosis"],
    "hypothyroidism": ["thyroid"],
    "Graves disease": ["hyperthyroidism", "thyroid", "tremor", "palpitations"],
    "hypertension": ["blood pressure", "hypertensive"],
    "heart failure with reduced ejection fraction": ["heart failure", "cardiomyopathy", "edema"],
    "atrial fibrillation": ["atrial", "arrhythmia", "stroke", "palpitations"],
    "stable angina": ["angina", "coronary", "myocardial"],
    "acute coronary syndrome": ["coronary", "myocardial", "angina", "stent"],
    "hypercholesterolemia": ["cholesterol", "lipid", "cardiovascular"],
    "deep vein thrombosis": ["thrombosis", "thromboembolism", "venous", "embolism"],
    "pulmonary embolism": ["embolism", "thromboembolism", "thrombosis", "venous"],
    "asthma": ["bronchospasm", "wheeze"],
    "chronic obstructive pulmonary disease": ["COPD", "bronchospasm", "bronchitis"],
    "community-acquired pneumonia": ["pneumonia", "respiratory infection"],
    "tuberculosis": ["mycobacterial"],
    "influenza": ["viral", "fever"],
    "obstructive sleep apnea": ["sleep", "apnea", "obesity"],
    "gastroesophageal reflux disease": ["reflux", "esophagitis", "heartburn", "dyspepsia"],
    "peptic ulcer disease": ["ulcer", "Helicobacter", "dyspepsia", "gastric"],
    "Clostridioides difficile infection": ["difficile", "diarrhea", "colitis"],
    "uncomplicated cystitis": ["urinary", "cystitis"],
    "benign prostatic hyperplasia": ["prostatic", "prostate", "urinary retention"],
    "major depressive disorder": ["depression", "depressive"],
    "generalized anxiety disorder": ["anxiety", "panic"],
    "bipolar disorder": ["bipolar", "mania"],
    "schizophrenia": ["psychosis", "psychotic"],
    "epilepsy": ["seizures", "epilepticus"],
    "Parkinson disease": ["parkinsonism", "tremor"],
    "migraine": ["headache"],
    "Alzheimer disease": ["dementia"],
    "bacterial meningitis": ["meningitis", "meningococcal"],
    "gout": ["urate", "hyperuricemia"],
    "rheumatoid arthritis": ["arthritis", "inflammatory", "autoimmune"],
    "osteoporosis": ["bone", "fracture"],
    "iron deficiency anemia": ["anemia", "iron"],
    "herpes zoster": ["zoster", "herpes", "shingles", "varicella"],
}

# Real uses beyond the table's indications (approved or common off-label),
# written as words or short phrases; used only to exclude wrong answers.
EXTRA_USES = {
    "metformin": ["prediabetes", "polycystic ovary syndrome", "obesity", "weight gain", "cardiovascular"],
    "insulin glargine": ["diabetes"],
    "glipizide": ["diabetes"],
    "empagliflozin": ["kidney"],
    "liraglutide": ["cardiovascular"],
    "levothyroxine": ["thyroid", "goiter", "depression"],
    "methimazole": ["thyroid"],
    "prednisone": ["asthma", "COPD", "arthritis", "gout", "inflammatory", "autoimmune",
                   "psoriasis", "pericarditis", "Pneumocystis", "tuberculosis", "meningitis",
                   "zoster", "Graves", "thyroid", "allergic", "sclerosis", "migraine",
                   "headache", "cancer", "nausea", "hypercalcemia", "adrenal", "sarcoidosis",
                   "lupus", "colitis", "pneumonia", "anemia", "kidney", "palsy", "pharyngitis", "seizures", "epilepsy", "spasms"],
    "allopurinol": ["urate", "kidney stones"],
    "colchicine": ["cardiovascular", "coronary", "myocardial", "stroke", "atrial"],
    "alendronate": ["Paget", "bone"],
    "methotrexate": ["arthritis", "Crohn", "ectopic", "lupus", "leukemia", "lymphoma",
                     "vasculitis"],
    "lisinopril": ["kidney", "diabetic", "migraine", "proteinuria"],
    "amlodipine": ["angina", "Raynaud", "coronary"],
    "hydrochlorothiazide": ["insipidus", "kidney stones", "heart failure"],
    "furosemide": ["hypertension", "ascites", "hypercalcemia", "kidney", "hyperkalemia"],
    "spironolactone": ["hypertension", "acne", "hirsutism", "edema", "cirrhosis"],
    "metoprolol": ["heart failure", "myocardial", "coronary", "migraine", "tremor",
                   "thyroid", "Graves", "anxiety", "arrhythmia", "tachycardia", "alcohol"],
    "propranolol": ["hypertension", "angina", "thyroid", "Graves", "anxiety", "hemangioma",
                    "arrhythmia", "tachycardia", "atrial", "myocardial", "cirrhosis",
                    "migraine", "tremor", "post-traumatic", "alcohol", "schizophrenia", "akathisia"],
    "atorvastatin": ["cholesterol", "coronary", "stroke", "myocardial", "angina", "diabetes",
                     "kidney"],
    "warfarin": ["thrombosis", "embolism", "stroke", "myocardial", "valve"],
    "apixaban": ["thromboembolism", "stroke", "atrial"],
    "heparin": ["thrombosis", "embolism", "atrial", "dialysis", "stroke", "angina"],
    "aspirin": ["coronary", "myocardial", "stroke", "pain", "fever", "angina", "atrial",
                "arthritis", "migraine", "headache", "pericarditis", "Kawasaki", "thrombosis",
                "preeclampsia", "inflammatory"],
    "clopidogrel": ["coronary", "stent", "stroke", "myocardial", "angina", "peripheral"],
    "digoxin": ["atrial", "arrhythmia"],
    "amiodarone": ["arrhythmia", "tachycardia", "atrial", "cardiac arrest", "heart failure"],
    "nitroglycerin": ["angina", "heart failure", "pulmonary edema", "hypertensive", "coronary",
                      "myocardial", "fissure"],
    "sildenafil": ["erectile", "pulmonary", "hypertension", "prostatic", "Raynaud"],
    "omeprazole": ["reflux", "ulcer", "Helicobacter", "dyspepsia", "gastric", "bleeding",
                   "esophagitis", "Zollinger"],
    "ondansetron": ["nausea", "vomiting", "gastroenteritis", "migraine", "hyperemesis"],
    "amoxicillin": ["otitis", "pharyngitis", "pneumonia", "Helicobacter", "ulcer", "sinusitis",
                    "Lyme", "urinary", "cystitis", "endocarditis", "infection", "valve", "COPD", "exacerbations"],
    "ceftriaxone": ["meningitis", "gonorrhea", "pneumonia", "pyelonephritis", "urinary",
                    "sepsis", "Lyme", "infection", "cystitis", "COPD", "exacerbations"],
    "azithromycin": ["pneumonia", "chlamydia", "pertussis", "Helicobacter", "ulcer", "COPD",
                     "bronchitis", "cystic fibrosis", "trachoma", "diarrhea", "infection"],
    "ciprofloxacin": ["pyelonephritis", "urinary", "anthrax", "cystitis", "prostatitis",
                      "diarrhea", "gastroenteritis", "pneumonia", "osteomyelitis", "meningitis",
                      "gonorrhea", "infection", "COPD", "exacerbations"],
    "nitrofurantoin": ["cystitis", "urinary", "infection"],
    "trimethoprim-sulfamethoxazole": ["urinary", "cystitis", "Pneumocystis", "pneumonia",
                                      "MRSA", "skin", "toxoplasmosis", "diarrhea",
                                      "infection"],
    "vancomycin": ["MRSA", "difficile", "meningitis", "endocarditis", "sepsis", "pneumonia",
                   "osteomyelitis", "infection"],
    "metronidazole": ["vaginosis", "trichomoniasis", "anaerobic", "difficile", "Helicobacter",
                      "ulcer", "abscess", "giardiasis", "amoebiasis", "diarrhea",
                      "infection"],
    "isoniazid": ["tuberculosis", "infection"],
    "rifampin": ["tuberculosis", "meningitis", "meningococcal", "MRSA", "endocarditis",
                 "leprosy", "infection"],
    "acyclovir": ["herpes", "zoster", "chickenpox", "varicella", "encephalitis", "infection"],
    "oseltamivir": ["influenza", "infection"],
    "fluconazole": ["candidiasis", "cryptococcal", "fungal", "meningitis", "infection"],
    "sertraline": ["depression", "panic", "post-traumatic", "anxiety", "obsessive",
                   "premenstrual", "social", "bulimia"],
    "venlafaxine": ["depression", "anxiety", "panic", "neuropathic", "flashes", "migraine"],
    "amitriptyline": ["depression", "neuropathic", "migraine", "pain", "insomnia", "irritable",
                      "fibromyalgia", "headache", "enuresis", "cystitis", "zoster", "postherpetic"],
    "lithium": ["bipolar", "mania", "depression", "suicide", "thyroid", "Graves", "hyperthyroidism", "headache"],
    "haloperidol": ["schizophrenia", "agitation", "Tourette", "delirium", "nausea", "vomiting",
                    "psychosis", "mania", "bipolar"],
    "olanzapine": ["schizophrenia", "bipolar", "mania", "agitation", "nausea", "vomiting",
                   "psychosis", "depression"],
    "lorazepam": ["anxiety", "panic", "epilepticus", "seizures", "epilepsy", "alcohol",
                  "insomnia", "agitation", "nausea", "vomiting", "sedation", "catatonia"],
    "albuterol": ["bronchospasm", "asthma", "COPD", "hyperkalemia"],
    "fluticasone": ["asthma", "COPD", "rhinitis", "eczema", "psoriasis"],
    "tiotropium": ["COPD", "asthma"],
    "ibuprofen": ["pain", "fever", "osteoarthritis", "arthritis", "gout", "migraine",
                  "headache", "dysmenorrhea", "inflammatory", "pericarditis", "zoster",
                  "influenza", "ductus", "pharyngitis", "otitis", "cystitis"],
    "acetaminophen": ["pain", "fever", "osteoarthritis", "migraine", "headache", "influenza",
                      "zoster", "arthritis", "gout", "pharyngitis", "otitis", "chickenpox", "varicella"],
    "morphine": ["pain", "cancer", "myocardial", "coronary", "pulmonary edema", "breathlessness",
                 "dyspnea", "palliative", "zoster", "arthritis"],
    "naloxone": ["opioid", "overdose"],
    "levetiracetam": ["seizures", "epilepsy", "epilepticus"],
    "valproate": ["epilepsy", "seizures", "bipolar", "mania", "migraine", "epilepticus"],
    "carbamazepine": ["seizures", "epilepsy", "neuralgia", "bipolar", "neuropathic"],
    "levodopa-carbidopa": ["parkinsonism", "restless legs"],
    "donepezil": ["dementia"],
    "sumatriptan": ["migraine", "headache"],
    "tamsulosin": ["prostatic", "urinary", "kidney stones", "ureteral", "retention", "hypertension"],
    "ferrous sulfate": ["anemia", "iron", "pregnancy", "kidney", "heart failure"],
}

# Drugs whose class or mechanism phrase may be true of one another.
CONFLICT_GROUPS = [
    {"levetiracetam", "valproate", "carbamazepine", "lorazepam", "lithium", "olanzapine"},
    {"aspirin", "ibuprofen", "acetaminophen", "morphine", "clopidogrel"},
    {"warfarin", "apixaban", "heparin"},
    {"prednisone", "fluticasone"},
    {"methotrexate", "trimethoprim-sulfamethoxazole"},
    {"metoprolol", "propranolol", "amiodarone"},
    {"isoniazid", "rifampin", "ciprofloxacin"},  # fluoroquinolones are second-line for TB
    {"sertraline", "venlafaxine", "amitriptyline"},
    {"amoxicillin", "ceftriaxone", "vancomycin"},  # all block cell wall synthesis
    {"glipizide", "amiodarone"},  # both act on potassium channels
    # sodium channel blockade (membrane stabilising) beyond the antiepileptics
    {"carbamazepine", "valproate", "propranolol", "amiodarone", "amitriptyline"},
    {"amitriptyline", "tiotropium", "olanzapine"},  # antimuscarinic effects
    {"tamsulosin", "olanzapine", "haloperidol", "amitriptyline"},  # alpha-1 blockade
    {"olanzapine", "ondansetron"},  # olanzapine also blocks 5-HT3 receptors
]

# Conditions that could also be filed under another organ system.
SYSTEM_NEAR = {
    "neurological": {"psychiatric"},
    "psychiatric": {"neurological", "endocrine"},  # thyroid tests are part of the work-up
    "cardiovascular": {"hematologic", "respiratory"},
    "respiratory": {"cardiovascular"},
    "hematologic": {"gastrointestinal", "cardiovascular"},
    "gastrointestinal": {"hematologic"},
}
CONDITION_SYSTEM_NEAR = {
    "pulmonary embolism": {"hematologic"},
    "hypertension": {"genitourinary", "endocrine"},
    "hypercholesterolemia": {"endocrine"},
    "osteoporosis": {"endocrine"},
    "gout": {"endocrine"},
    "rheumatoid arthritis": {"hematologic"},
    "herpes zoster": {"neurological"},
    "obstructive sleep apnea": {"neurological"},
    "type 1 diabetes": {"genitourinary"},
    "type 2 diabetes": {"cardiovascular", "genitourinary"},
    "Graves disease": {"cardiovascular"},
    "atrial fibrillation": {"endocrine"},  # thyroid tests are part of the work-up
}


# Indication phrases never used as a wrong indication: too general to be
# clearly false for another drug, or worded as a condition of use.
VAGUE_INDICATIONS = {
    "fever", "mild to moderate pain", "severe acute pain", "inflammatory and autoimmune disorders",
    "certain cancers", "edema", "acute agitation", "anxiety disorders",
    "Clostridioides difficile infection when given orally",
}


def vague_test(test: str) -> bool:
    """Diagnostic 'tests' too general to be clearly wrong for another condition."""
    return "clinical" in test


_STOPWORDS = {
    "with", "from", "when", "that", "this", "such", "disease", "diseases", "disorder",
    "disorders", "acute", "chronic", "type", "reduced", "ejection", "fraction", "syndrome",
    "major", "generalized", "uncomplicated", "complicated", "benign", "deep", "stable",
    "treatment", "prevention", "secondary", "maintenance", "relief", "control", "rate",
    "after", "given", "orally", "certain", "primary", "severe", "mild", "moderate", "induced",
    "other", "patients", "controlled", "inhaled", "corticosteroids", "exertional",
    "hospital", "community", "acquired", "essential", "familial", "prophylaxis", "episodes",
    "status", "focal", "tonic", "clonic", "myoclonic", "post",
}


def _words(text: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", text.lower()) if w]


def stems(text: str) -> set[str]:
    """Content-word stems of a phrase: lower case, first 6 letters, 4+ letter words."""
    return {w[:6] for w in _words(text) if len(w) >= 4 and w not in _STOPWORDS}


def related(a: list[str], b: list[str]) -> bool:
    """True if a content stem of any phrase in ``a`` occurs inside a word of ``b`` or back."""
    words_a = {w for t in a for w in _words(t)}
    words_b = {w for t in b for w in _words(t)}
    stems_a = {s for t in a for s in stems(t)}
    stems_b = {s for t in b for s in stems(t)}
    return (any(s in w for s in stems_a for w in words_b)
            or any(s in w for s in stems_b for w in words_a))


def conflict(a: str, b: str) -> bool:
    """True if drugs ``a`` and ``b`` share a conflict group (or are the same drug)."""
    return a == b or any(a in g and b in g for g in CONFLICT_GROUPS)
