"""Multiple-choice benchmark tasks as lm-evaluation-harness defines them (0-shot).

A task turns each document (one JSON object of a local file) into a context string
(``doc_to_text``, after the task's ``description``), a list of choice strings and the
gold choice's index; scoring then compares ``target_delimiter + choice`` continuations
(``medjax.evals.score``). The built-in tasks reproduce lm-eval 0.4.x's task files
(``medqa_4options``, ``medmcqa``, ``pubmedqa``, ``mmlu_<subject>``) and read the public
datasets' layouts from a local directory:

  task             files looked for under --data_dir (JSONL or Parquet)          layouts
  medqa_4options   medqa_4options.jsonl, medqa.jsonl, medqa_4options/test.jsonl,  sent1/ending0..3/label;
                   medqa/test.jsonl, .../test-*.parquet                           question/options/answer_idx
  medmcqa          medmcqa.jsonl, medmcqa/validation.jsonl (lm-eval scores the    question/opa..opd/cop
                   validation split), medmcqa/dev.json
  pubmedqa         pubmedqa.jsonl, pubmedqa/test.jsonl                            CONTEXTS/QUESTION/final_decision;
                                                                                  context/question/final_decision
  mmlu_<subject>   mmlu_<subject>.jsonl, mmlu/<subject>.jsonl,                    question/choices/answer
                   mmlu/<subject>/test.jsonl, mmlu/<subject>/test-*.parquet

Groups (lm-eval's size-weighted mean of ``acc`` and pooled standard error):
``mmlu_medical`` (the six medical MMLU subjects) and ``multimedqa`` (lm-eval's group:
PubMedQA, MedMCQA, MedQA and the six subjects).

A user-defined task is a YAML or JSON file with lm-eval's fields::

    task: my_quiz
    dataset_path: my_quiz.jsonl          # relative to the spec file (or --data_dir)
    doc_to_text: "Question: {{question}}\\nAnswer:"     # Jinja, or a field name
    doc_to_choice: "{{options}}"         # a list, a field name, or a template giving a list
    doc_to_target: answer                # a field, an index, or a template (index or choice)
    description: ""                      # optional, before each context
    target_delimiter: " "                # optional
    metric_list: [acc, acc_norm]         # optional (default: both)
"""

from __future__ import annotations

import ast
import dataclasses
import glob
import json
import os
from typing import Any, Callable, Iterator

LETTERS = "ABCDEFGHIJ"

MMLU_MEDICAL = ("anatomy", "clinical_knowledge", "college_biology", "college_medicine",
                "medical_genetics", "professional_medicine")
GROUPS = {
    "mmlu_medical": tuple(f"mmlu_{s}" for s in MMLU_MEDICAL),
    # lm-eval's tasks/benchmarks/multimedqa/multimedqa.yaml, in its order.
    "multimedqa": ("pubmedqa", "medmcqa", "medqa_4options", "mmlu_anatomy",
                   "mmlu_clinical_knowledge", "mmlu_college_medicine", "mmlu_medical_genetics",
                   "mmlu_professional_medicine", "mmlu_college_biology"),
}


class TaskError(ValueError):
    """A task file or record that can not be used; the message names file, line and field."""


@dataclasses.dataclass
class Doc:
    """One question ready to score: its context, choices and gold index."""
    index: int
    raw: dict
    context: str
    choices: list[str]
    gold: int
    target: Any = None  # doc_to_target as the task gives it (an index or a choice string)


@dataclasses.dataclass
class Task:
    name: str
    files: list[str]                       # where the documents were read from
    docs: Callable[[], Iterator[tuple[str, int, dict]]]  # (file, line, record)
    to_doc: Callable[[dict], tuple[str, list[str], Any]]  # -> (text, choices, target)
    description: str = ""
    target_delimiter: str = " "
    metrics: tuple[str, ...] = ("acc", "acc_norm")

    def load(self, limit: int | None = None) -> list[Doc]:
        out = []
        for where, line, record in self.docs():
            if limit is not None and len(out) >= limit:
                break
            try:
                text, choices, target = self.to_doc(record)
                gold = _gold_index(target, choices)
            except TaskError as e:
                raise TaskError(f"{where}:{line}: {e}") from None
            out.append(Doc(len(out), record, self.description + text, choices, gold, target))
        if not out:
            raise TaskError(f"{self.name}: no documents in {', '.join(self.files)}")
        return out


def _gold_index(target, choices: list[str]) -> int:
    """lm-eval's reading of doc_to_target: an index, or one of the choice strings."""
    if isinstance(target, bool):
        raise TaskError(f"gold answer {target!r} is neither an index nor a choice")
    if isinstance(target, int):
        if not 0 <= target < len(choices):
            raise TaskError(f"gold index {target} is outside the {len(choices)} choices")
        return target
    if isinstance(target, str):
        if target in choices:
            return choices.index(target)
        if target.strip().isdigit() and int(target) < len(choices):
            return int(target)
    raise TaskError(f"gold answer {target!r} is not one of the choices {choices}")


def _field(record: dict, name: str, layout: str):
    if name not in record:
        raise TaskError(f"no field {name!r} ({layout} layout; the record has "
                        f"{', '.join(sorted(map(str, record))) or 'no fields'})")
    return record[name]


# ------------------------------------------------------------------ reading files


def read_records(path: str) -> Iterator[tuple[str, int, dict]]:
    """(file, line or row number, record) from JSONL, a JSON array or Parquet."""
    if path.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise TaskError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow)") \
                from None
        try:
            rows = pq.read_table(path).to_pylist()
        except Exception as e:  # noqa: BLE001 - pyarrow raises many kinds
            raise TaskError(f"{path}: not a readable Parquet file ({e})") from None
        for n, row in enumerate(rows, 1):
            yield path, n, row
        return
    with open(path, encoding="utf-8") as f:
        head = f.read(1 << 16).lstrip()
        f.seek(0)
        if head.startswith("["):  # a JSON array
            try:
                rows = json.load(f)
            except ValueError as e:
                raise TaskError(f"{path}: not valid JSON ({e})") from None
            for n, row in enumerate(rows, 1):
                if not isinstance(row, dict):
                    raise TaskError(f"{path}: item {n} is not a JSON object")
                yield path, n, row
            return
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as e:
                raise TaskError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            if not isinstance(row, dict):
                raise TaskError(f"{path}:{n}: not a JSON object")
            yield path, n, row


def _find(data_dir: str, names: list[str], split: str) -> list[str]:
    patterns = []
    for name in names:
        patterns += [f"{name}.jsonl", f"{name}.json", f"{name}.parquet",
                     f"{name}/{split}.jsonl", f"{name}/{split}.json", f"{name}/{split}.parquet",
                     f"{name}/{split}-*.parquet", f"{name}/data/{split}-*.parquet"]
    for p in patterns:
        hits = sorted(glob.glob(os.path.join(data_dir, p)))
        if hits:
            return hits
    raise TaskError(f"{data_dir}: no file for this task; looked for "
                    + ", ".join(patterns[:6]) + ", ...")


def _reader(files: list[str]):
    def docs():
        for path in files:
            yield from read_records(path)
    return docs


# ------------------------------------------------------------------ built-in tasks


def _options_text(options: list[str]) -> str:
    return "".join(f"{LETTERS[i]}. {o}\n" for i, o in enumerate(options))


def _medqa(record: dict):
    if "sent1" in record:  # lm-eval's GBaker/MedQA-USMLE-4-options-hf
        options = [_field(record, f"ending{i}", "MedQA (sent1/ending0..3/label)")
                   for i in range(4)]
        question, target = record["sent1"], _field(record, "label", "MedQA")
    else:  # the original MedQA JSONL
        question = _field(record, "question", "MedQA (question/options/answer_idx)")
        opts = _field(record, "options", "MedQA (question/options/answer_idx)")
        if isinstance(opts, dict):
            keys = sorted(opts)
            options = [opts[k] for k in keys]
        elif isinstance(opts, list):
            keys, options = list(LETTERS[:len(opts)]), list(opts)
        else:
            raise TaskError(f"field 'options' is {type(opts).__name__}, not a dict or list")
        if "answer_idx" in record:
            target = str(record["answer_idx"]).strip()
            if target not in keys:
                raise TaskError(f"field 'answer_idx' is {target!r}, not one of {keys}")
            target = keys.index(target)
        else:
            target = _field(record, "answer", "MedQA (question/options/answer_idx)")
            if target not in options:
                raise TaskError(f"field 'answer' {target!r} is not one of the options")
            target = options.index(target)
    choices = list(LETTERS[:len(options)])
    return f"Question: {question}\n{_options_text(options)}Answer:", choices, target


def _medmcqa(cop_base: int):
    def to_doc(record: dict):
        question = _field(record, "question", "MedMCQA (question/opa..opd/cop)")
        options = [_field(record, f"op{c}", "MedMCQA (question/opa..opd/cop)") for c in "abcd"]
        cop = _field(record, "cop", "MedMCQA (question/opa..opd/cop)")
        text = "Question: " + question + "\nChoices:\n" + _options_text(options) + "Answer:"
        return text, list("ABCD"), int(cop) - cop_base
    return to_doc


def _pubmedqa(record: dict):
    if "CONTEXTS" in record or "QUESTION" in record:  # lm-eval's bigbio source layout
        contexts = _field(record, "CONTEXTS", "PubMedQA (CONTEXTS/QUESTION/final_decision)")
        question = _field(record, "QUESTION", "PubMedQA (CONTEXTS/QUESTION/final_decision)")
    else:  # flattened (e.g. qiaojin/PubMedQA pqa_labeled): context may hold "contexts"
        contexts = _field(record, "context", "PubMedQA (context/question/final_decision)")
        if isinstance(contexts, dict):
            contexts = _field(contexts, "contexts", "PubMedQA context")
        question = _field(record, "question", "PubMedQA (context/question/final_decision)")
    if isinstance(contexts, str):
        contexts = [contexts]
    text = "Abstract: {}\nQuestion: {}\nAnswer:".format("\n".join(contexts), question)
    target = str(_field(record, "final_decision", "PubMedQA")).strip().lower()
    return text, ["yes", "no", "maybe"], target


def _mmlu(record: dict):
    question = _field(record, "question", "MMLU (question/choices/answer)")
    choices = _field(record, "choices", "MMLU (question/choices/answer)")
    if not isinstance(choices, list) or len(choices) != 4:
        raise TaskError("field 'choices' must be a list of 4 strings")
    answer = _field(record, "answer", "MMLU (question/choices/answer)")
    if isinstance(answer, str) and answer.strip() in "ABCD" and answer.strip():
        answer = "ABCD".index(answer.strip())
    text = (f"{str(question).strip()}\nA. {choices[0]}\nB. {choices[1]}\nC. {choices[2]}"
            f"\nD. {choices[3]}\nAnswer:")
    return text, list("ABCD"), int(answer)


def _medmcqa_base(files: list[str]) -> int:
    """MedMCQA's ``cop`` is 0-3 in the Hugging Face copy lm-eval reads and 1-4 in the
    original release: 1-based when a 4 occurs and no 0 does."""
    seen = set()
    for _, _, r in _reader(files)():
        if "cop" in r:
            try:
                seen.add(int(r["cop"]))
            except (TypeError, ValueError):
                pass
    return 1 if 4 in seen and 0 not in seen else 0


BUILTIN = ("medqa_4options", "medmcqa", "pubmedqa") + tuple(f"mmlu_{s}" for s in MMLU_MEDICAL)


def builtin_task(name: str, data_dir: str) -> Task:
    if name == "medqa_4options":
        files = _find(data_dir, ["medqa_4options", "medqa"], "test")
        return Task(name, files, _reader(files), _medqa)
    if name == "medmcqa":
        files = _find(data_dir, ["medmcqa"], "validation") if not os.path.exists(
            os.path.join(data_dir, "medmcqa", "dev.json")) else [
                os.path.join(data_dir, "medmcqa", "dev.json")]
        return Task(name, files, _reader(files), _medmcqa(_medmcqa_base(files)))
    if name == "pubmedqa":
        files = _find(data_dir, ["pubmedqa", "pubmed_qa"], "test")
        return Task(name, files, _reader(files), _pubmedqa, metrics=("acc",))
    if name.startswith("mmlu_"):
        subject = name[len("mmlu_"):]
        files = _find(data_dir, [name, f"mmlu/{subject}"], "test")
        return Task(name, files, _reader(files), _mmlu,
                    description="The following are multiple choice questions (with answers) "
                                f"about {subject.replace('_', ' ')}.\n\n", metrics=("acc",))
    raise TaskError(f"unknown task {name!r}")


# ------------------------------------------------------------------ user-defined tasks


def _jinja():
    import jinja2
    return jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True)


def _render(template: str, record: dict, what: str) -> str:
    import jinja2
    try:
        return _jinja().from_string(template).render(**record)
    except jinja2.TemplateError as e:
        raise TaskError(f"{what} {template!r}: {e}") from None


def spec_task(path: str, data_dir: str | None) -> Task:
    """A task from a YAML or JSON file with lm-eval's field names (module docstring)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise TaskError(f"{path}: {e.strerror}") from None
    if path.endswith(".json"):
        try:
            spec = json.loads(text)
        except ValueError as e:
            raise TaskError(f"{path}: not valid JSON ({e})") from None
    else:
        import yaml
        try:
            spec = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise TaskError(f"{path}: not valid YAML ({' '.join(str(e).split())})") from None
    if not isinstance(spec, dict):
        raise TaskError(f"{path}: a task file holds a mapping of fields")
    known = {"task", "dataset_path", "data_files", "doc_to_text", "doc_to_choice",
             "doc_to_target", "description", "target_delimiter", "metric_list",
             "output_type", "test_split"}
    unknown = sorted(set(spec) - known)
    if unknown:
        raise TaskError(f"{path}: unknown field(s) {', '.join(unknown)} (known: "
                        f"{', '.join(sorted(known))})")
    for field in ("doc_to_text", "doc_to_choice", "doc_to_target"):
        if field not in spec:
            raise TaskError(f"{path}: field {field!r} is required")
    if spec.get("output_type", "multiple_choice") != "multiple_choice":
        raise TaskError(f"{path}: output_type {spec['output_type']!r}: only multiple_choice "
                        "tasks are supported")
    name = str(spec.get("task") or os.path.splitext(os.path.basename(path))[0])
    data = spec.get("dataset_path") or spec.get("data_files")
    if not data:
        raise TaskError(f"{path}: field 'dataset_path' (the JSONL or Parquet file) is required")
    data = [data] if isinstance(data, str) else list(data)
    files = []
    for d in data:
        cands = [d] if os.path.isabs(d) else [os.path.join(os.path.dirname(path), d)] + (
            [os.path.join(data_dir, d)] if data_dir else [])
        hits = [c for c in cands if os.path.exists(c)]
        if not hits:
            raise TaskError(f"{path}: field 'dataset_path': {d} not found (looked in "
                            f"{', '.join(os.path.dirname(c) or '.' for c in cands)})")
        files.append(hits[0])
    metrics = []
    for m in spec.get("metric_list") or ["acc", "acc_norm"]:
        m = m.get("metric") if isinstance(m, dict) else m
        if m not in ("acc", "acc_norm"):
            raise TaskError(f"{path}: metric {m!r}: supported are acc and acc_norm")
        metrics.append(m)
    doc_to_text, doc_to_choice, doc_to_target = (spec["doc_to_text"], spec["doc_to_choice"],
                                                 spec["doc_to_target"])

    def to_doc(record: dict):
        if isinstance(doc_to_text, str) and doc_to_text in record:
            text = str(record[doc_to_text])
        else:
            text = _render(str(doc_to_text), record, "doc_to_text")
        if isinstance(doc_to_choice, list):
            choices = [str(c) for c in doc_to_choice]
        elif isinstance(doc_to_choice, str) and doc_to_choice in record:
            choices = record[doc_to_choice]
        else:
            rendered = _render(str(doc_to_choice), record, "doc_to_choice")
            try:
                choices = ast.literal_eval(rendered)
            except (ValueError, SyntaxError):
                raise TaskError(f"doc_to_choice gave {rendered[:80]!r}, not a list") from None
        if isinstance(choices, dict):
            choices = [choices[k] for k in sorted(choices)]
        if not isinstance(choices, list) or len(choices) < 2:
            raise TaskError(f"doc_to_choice gave {choices!r}: need a list of 2 or more choices")
        choices = [str(c) for c in choices]
        if isinstance(doc_to_target, int):
            target = doc_to_target
        elif doc_to_target in record:
            target = record[doc_to_target]
        else:
            target = _render(str(doc_to_target), record, "doc_to_target").strip()
        if isinstance(target, str) and target.strip().lstrip("-").isdigit() \
                and target.strip() not in choices:
            target = int(target)
        return text, choices, target

    return Task(name, files, _reader(files), to_doc, description=str(spec.get("description") or ""),
                target_delimiter=str(spec.get("target_delimiter", " ")), metrics=tuple(metrics))


# ------------------------------------------------------------------ resolution


def resolve(names: list[str], data_dir: str | None) -> tuple[list[Task], dict[str, tuple]]:
    """Tasks (in order, without repeats) and groups {group: its task names} for names
    that are built-in tasks, groups or task files."""
    tasks, groups, seen = [], {}, set()

    def add(task: Task):
        if task.name not in seen:
            seen.add(task.name)
            tasks.append(task)

    for name in names:
        name = name.strip()
        if not name:
            continue
        if name.endswith((".yaml", ".yml", ".json")):
            add(spec_task(name, data_dir))
        elif name in GROUPS:
            groups[name] = GROUPS[name]
            for t in GROUPS[name]:
                if t not in seen:
                    add(_builtin(t, data_dir))
        elif name in BUILTIN or name.startswith("mmlu_"):
            add(_builtin(name, data_dir))
        else:
            raise TaskError(f"--tasks: unknown task {name!r}; known: "
                            f"{', '.join(BUILTIN + tuple(GROUPS))}, any mmlu_<subject>, or "
                            "a task file (.yaml/.json)")
    return tasks, groups


def _builtin(name: str, data_dir: str | None) -> Task:
    if not data_dir:
        raise TaskError(f"task {name}: give --data_dir (the folder holding its files)")
    try:
        return builtin_task(name, data_dir)
    except TaskError as e:
        raise TaskError(f"task {name}: {e}") from None
