"""medjax.evaluate equals lm-evaluation-harness's procedure.

The reference here is written out independently of medjax: lm-eval's task prompts
(copied by hand from its task files), its ``_encode_pair`` and ``_loglikelihood_tokens``
over a ``transformers`` tokenizer and a ``transformers`` forward, and its metrics."""

import json
import os
import shutil

import numpy as np
import pytest

from conftest import BASE, build_hf_model, tiny_llama3_dir

MEDQA = [
    {"sent1": "Which drug lowers blood glucose?", "ending0": "Metformin", "ending1": "Warfarin",
     "ending2": "Atenolol", "ending3": "Omeprazole", "label": 0},
    {"sent1": "A 54-year-old man has crushing chest pain. First test?", "ending0": "MRI",
     "ending1": "Electrocardiogram", "ending2": "Colonoscopy", "ending3": "EEG", "label": 1},
    {"sent1": "Asthma is a disease of which system?", "ending0": "Renal",
     "ending1": "Nervous", "ending2": "Respiratory", "ending3": "Skin", "label": 2},
]
MEDQA_ORIG = [{"question": "What does insulin treat?",
               "options": {"A": "Gout", "B": "Diabetes mellitus", "C": "Acne", "D": "Myopia"},
               "answer": "Diabetes mellitus", "answer_idx": "B"},
              {"question": "Which is a statin?",
               "options": {"A": "Furosemide", "B": "Digoxin", "C": "Atorvastatin", "D": "Heparin"},
               "answer": "Atorvastatin", "answer_idx": "C"}]
MEDMCQA = [
    {"question": "Drug of choice for anaphylaxis", "opa": "Adrenaline", "opb": "Atropine",
     "opc": "Aspirin", "opd": "Amoxicillin", "cop": 0},
    {"question": "Vitamin deficient in scurvy", "opa": "A", "opb": "B12", "opc": "C",
     "opd": "D", "cop": 2},
]
LONG = " ".join(["Hypertension raises the risk of stroke and of heart failure."] * 12)
PUBMEDQA = [
    {"QUESTION": "Does aspirin reduce fever?", "CONTEXTS": ["Aspirin is an antipyretic.",
                                                            "It lowers fever in adults."],
     "final_decision": "yes"},
    {"QUESTION": "Is hypertension harmless?", "CONTEXTS": [LONG, LONG],  # past the window
     "final_decision": "no"},
]
PUBMEDQA_FLAT = [{"question": "Is vitamin D made in skin?",
                  "context": {"contexts": ["Sunlight drives vitamin D synthesis in skin."]},
                  "final_decision": "yes"},
                 {"question": "Does vitamin C cure gout?",
                  "context": {"contexts": ["Vitamin C prevents scurvy."]},
                  "final_decision": "maybe"}]
MMLU = [{"question": "  The femur is in the   ", "choices": ["arm", "leg", "skull", "chest"],
         "answer": 1},
        {"question": "The heart has how many chambers?", "choices": ["2", "3", "4", "5"],
         "answer": 2}]
# A user task: the context ends with spaces (moved to the continuation), and multi-token
# choices, one of which tokenises differently after the context than alone.
QUIZ = [{"q": "The antidote to paracetamol overdose is", "options": [
    "N-acetylcysteine", "naloxone", "flumazenil", "vitamin K"], "gold": 0},
        {"q": "Beta blockers end in", "options": ["-olol", "-pril", "-sartan", "-statin"],
         "gold": 0}]
QUIZ_SPEC = {"task": "quiz", "dataset_path": "quiz.jsonl",
             "doc_to_text": "Q: {{q}}\nA:  ", "doc_to_choice": "{{options}}",
             "doc_to_target": "gold", "metric_list": [{"metric": "acc"}, "acc_norm"]}
# No delimiter and contexts ending inside a word or number: with Llama-3's tokenizer
# "1" + "000 mg" encodes as "1000" + " mg", so the continuation's ids are the tail of the
# whole (" mg"), not "000 mg" encoded alone.
SUFFIX = [{"text": "The names of beta blockers end in -", "choices": ["olol", "pril", "sartan"],
           "gold": 0},
          {"text": "The usual adult dose of paracetamol is 1", "choices": ["000 mg", "0 g", "5 kg"],
           "gold": 0}]
SUFFIX_SPEC = {"task": "suffix", "dataset_path": "suffix.jsonl", "doc_to_text": "text",
               "doc_to_choice": "choices", "target_delimiter": "", "doc_to_target": "{{gold}}"}
DELIMITER = {"suffix": ""}


def _letters(options):
    return "".join(f"{'ABCD'[i]}. {o}\n" for i, o in enumerate(options))


def expected(task, doc):
    """(context, choices, gold) as lm-eval's task files define them, written out here."""
    if task == "medqa_4options":
        if "sent1" in doc:
            opts = [doc[f"ending{i}"] for i in range(4)]
            return f"Question: {doc['sent1']}\n{_letters(opts)}Answer:", list("ABCD"), doc["label"]
        opts = [doc["options"][k] for k in "ABCD"]
        return (f"Question: {doc['question']}\n{_letters(opts)}Answer:", list("ABCD"),
                "ABCD".index(doc["answer_idx"]))
    if task == "medmcqa":
        opts = [doc["opa"], doc["opb"], doc["opc"], doc["opd"]]
        return (f"Question: {doc['question']}\nChoices:\n{_letters(opts)}Answer:", list("ABCD"),
                doc["cop"])
    if task == "pubmedqa":
        ctx = doc["CONTEXTS"] if "CONTEXTS" in doc else doc["context"]["contexts"]
        q = doc.get("QUESTION", doc.get("question"))
        return (f"Abstract: {chr(10).join(ctx)}\nQuestion: {q}\nAnswer:", ["yes", "no", "maybe"],
                ["yes", "no", "maybe"].index(doc["final_decision"]))
    if task == "mmlu_anatomy":
        c = doc["choices"]
        return ("The following are multiple choice questions (with answers) about anatomy.\n\n"
                f"{doc['question'].strip()}\nA. {c[0]}\nB. {c[1]}\nC. {c[2]}\nD. {c[3]}\nAnswer:",
                list("ABCD"), doc["answer"])
    if task == "quiz":
        return f"Q: {doc['q']}\nA:  ", doc["options"], doc["gold"]
    if task == "suffix":
        return doc["text"], doc["choices"], doc["gold"]
    raise KeyError(task)


def write_jsonl(path, rows):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


@pytest.fixture(scope="module")
def data_dirs(tmp_path_factory):
    import pyarrow as pa
    import pyarrow.parquet as pq
    main = tmp_path_factory.mktemp("bench")
    write_jsonl(str(main / "medqa_4options.jsonl"), MEDQA)
    os.makedirs(main / "medmcqa")
    pq.write_table(pa.Table.from_pylist(MEDMCQA), str(main / "medmcqa" / "validation.parquet"))
    write_jsonl(str(main / "pubmedqa" / "test.jsonl"), PUBMEDQA)
    write_jsonl(str(main / "mmlu" / "anatomy" / "test.jsonl"), MMLU)
    write_jsonl(str(main / "quiz.jsonl"), QUIZ)
    (main / "quiz.yaml").write_text(json.dumps(QUIZ_SPEC))  # JSON is YAML
    write_jsonl(str(main / "suffix.jsonl"), SUFFIX)
    (main / "suffix.json").write_text(json.dumps(SUFFIX_SPEC))
    alt = tmp_path_factory.mktemp("bench_alt")
    write_jsonl(str(alt / "medqa.jsonl"), MEDQA_ORIG)
    write_jsonl(str(alt / "pubmedqa.jsonl"), PUBMEDQA_FLAT)
    return str(main), str(alt)


def _mistral_dir(path):
    """A tiny random Mistral with Mistral-7B-v0.1's SentencePiece tokenizer."""
    from transformers import LlamaTokenizer

    from medjax.data.tokenizer import MISTRAL_MODEL, _package_file
    build_hf_model(path, "Mistral", **dict(BASE, vocab_size=32000, sliding_window=None,
                                           bos_token_id=1, eos_token_id=2))
    src = os.path.join(path, "src")
    os.makedirs(src)
    shutil.copy(_package_file(*MISTRAL_MODEL), os.path.join(src, "tokenizer.model"))
    LlamaTokenizer.from_pretrained(src).save_pretrained(path)
    shutil.rmtree(src)
    return str(path)


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return {"llama3": tiny_llama3_dir(tmp_path_factory.mktemp("llama3")),
            "mistral": _mistral_dir(str(tmp_path_factory.mktemp("mistral")))}


def reference(model_dir, context, choices, add_bos, max_length, delimiter=" "):
    """lm-eval's _encode_pair + _loglikelihood_tokens with transformers, per choice."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()

    def encode(s):
        return ([tok.bos_token_id] if add_bos else []) + tok.encode(s, add_special_tokens=False)

    out, info = [], []
    for choice in choices:
        ctx_s, cont_s = context, delimiter + choice
        n = len(ctx_s) - len(ctx_s.rstrip())
        if n:
            ctx_s, cont_s = ctx_s[:-n], ctx_s[-n:] + cont_s
        whole = encode(ctx_s + cont_s)
        ctx = encode(ctx_s)
        cont = whole[len(ctx):]
        inp = (ctx + cont)[-(max_length + 1):][:-1]
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([inp])).logits[0].float(), -1)
        rows = logp[len(inp) - len(cont):len(inp)]
        ll = float(rows[torch.arange(len(cont)), torch.tensor(cont)].sum())
        greedy = bool((rows.argmax(-1) == torch.tensor(cont)).all())
        out.append((ll, greedy))
        info.append(dict(n_spaces=n, truncated=len(ctx + cont) > max_length + 1,
                         differs=cont != tok.encode(cont_s, add_special_tokens=False)))
    return out, info


@pytest.mark.parametrize("name,add_bos", [("llama3", True), ("llama3", False),
                                          ("mistral", True), ("mistral", False)])
def test_loglikelihoods_and_metrics_equal_lm_eval(models, data_dirs, name, add_bos):
    from medjax.evaluate import run
    main, alt = data_dirs
    window = 64
    seen = {"n_spaces": False, "truncated": False, "differs": False}
    for data_dir, tasks in ((main, ["medqa_4options", "medmcqa", "pubmedqa", "mmlu_anatomy",
                                    os.path.join(main, "quiz.yaml"),
                                    os.path.join(main, "suffix.json")]),
                            (alt, ["medqa_4options", "pubmedqa"])):
        out = run(models[name], tasks, data_dir=data_dir, add_bos=str(add_bos).lower(),
                  max_length=window, batch_size=4, progress=False, print_fn=lambda *_: None)
        assert out["config"]["add_bos"] is add_bos
        for task, samples in out["samples"].items():
            accs, norms = [], []
            for s in samples:
                context, choices, gold = expected(task, s["doc"])
                delimiter = DELIMITER.get(task, " ")
                assert s["arguments"] == [[context, delimiter + c] for c in choices], task
                assert s["gold"] == gold
                ref, info = reference(models[name], context, choices, add_bos, window, delimiter)
                for k in seen:
                    seen[k] |= any(i[k] for i in info)
                got = s["filtered_resps"]
                np.testing.assert_allclose([g[0] for g in got], [r[0] for r in ref],
                                           rtol=1e-5, atol=2e-4)
                assert [g[1] for g in got] == [r[1] for r in ref]
                lls = np.array([r[0] for r in ref])
                acc = float(np.argmax(lls) == gold)
                norm = float(np.argmax(lls / np.array([len(c) for c in choices])) == gold)
                accs.append(acc)
                norms.append(norm)
                assert s["acc"] == acc
                if "acc_norm" in s:
                    assert s["acc_norm"] == norm
            row = out["results"][task]
            assert row["acc,none"] == pytest.approx(np.mean(accs))
            assert row["acc_stderr,none"] == pytest.approx(
                np.std(accs, ddof=1) / np.sqrt(len(accs)), nan_ok=True)
            if task in ("medqa_4options", "medmcqa", "quiz", "suffix"):
                assert row["acc_norm,none"] == pytest.approx(np.mean(norms))
            else:  # pubmedqa and MMLU: acc only, as in lm-eval
                assert "acc_norm,none" not in row
    assert all(seen.values()), seen  # every tricky case was exercised


def test_groups_weight_by_size_and_pool_the_stderr(models, tmp_path):
    """mmlu_medical over two subjects of different sizes: lm-eval's weighted mean and its
    pooled standard error (formula written out from lm-eval's metrics.py)."""
    from medjax.evaluate import run
    write_jsonl(str(tmp_path / "mmlu_anatomy.jsonl"), MMLU)
    write_jsonl(str(tmp_path / "mmlu" / "clinical_knowledge.jsonl"), MMLU * 3)
    for s in ("college_biology", "college_medicine", "medical_genetics",
              "professional_medicine"):
        write_jsonl(str(tmp_path / f"mmlu_{s}.jsonl"), MMLU[:1] * 2)
    out = run(models["llama3"], ["mmlu_medical"], data_dir=str(tmp_path), progress=False,
              print_fn=lambda *_: None)
    res, sizes = out["results"], out["n-samples"]
    names = out["groups"]["mmlu_medical"]["tasks"]
    assert len(names) == 6 and sizes["mmlu_clinical_knowledge"] == 6
    n = np.array([sizes[t] for t in names], float)
    acc = np.array([res[t]["acc,none"] for t in names])
    se = np.array([res[t]["acc_stderr,none"] for t in names])
    assert out["groups"]["mmlu_medical"]["acc,none"] == pytest.approx((acc * n).sum() / n.sum())
    pooled = np.sqrt(((n - 1) * se ** 2 * n).sum() / (n.sum() - len(n)) / n.sum())
    assert out["groups"]["mmlu_medical"]["acc_stderr,none"] == pytest.approx(pooled)


def test_sharded_equals_one_device(models, data_dirs):
    from medjax.data.tokenizer import get_tokenizer
    from medjax.evals.run import evaluate
    from medjax.evals.tasks import resolve
    from medjax.models import load_hf
    from medjax.parallel import make_mesh
    import jax
    main, _ = data_dirs
    tok = get_tokenizer(models["llama3"])
    tasks, groups = resolve(["medqa_4options", "pubmedqa"], main)
    config, params = load_hf(models["llama3"])
    one = evaluate(config, params, tok, tasks, groups, add_bos=True, max_length=64,
                   progress=False)
    mesh = make_mesh(data=2, fsdp=2, tensor=2)
    config, sharded = load_hf(models["llama3"], mesh=mesh)
    with jax.set_mesh(mesh):
        many = evaluate(config, sharded, tok, tasks, groups, add_bos=True, max_length=64,
                        batch_size=3, progress=False)
    for task in one["samples"]:
        a = [r["filtered_resps"] for r in one["samples"][task]]
        b = [r["filtered_resps"] for r in many["samples"][task]]
        np.testing.assert_allclose([x[0] for row in a for x in row],
                                   [x[0] for row in b for x in row], rtol=1e-5, atol=1e-5)


def test_bad_tasks_and_records_name_the_file_line_and_field(tmp_path, models):
    from medjax.evals.tasks import TaskError, resolve
    from medjax.evaluate import run
    with pytest.raises(TaskError, match="unknown task 'medqa'"):
        resolve(["medqa"], str(tmp_path))
    with pytest.raises(TaskError, match=r"task medmcqa: .*no file for this task"):
        resolve(["medmcqa"], str(tmp_path))
    bad = [dict(MEDMCQA[0]), {k: v for k, v in MEDMCQA[1].items() if k != "opc"}]
    write_jsonl(str(tmp_path / "medmcqa.jsonl"), bad)
    with pytest.raises(TaskError, match=r"medmcqa.jsonl:2: no field 'opc' \(MedMCQA"):
        run(models["llama3"], ["medmcqa"], data_dir=str(tmp_path), progress=False,
            print_fn=lambda *_: None)
    (tmp_path / "t.yaml").write_text("task: t\ndoc_to_text: '{{q}}'\ndoc_to_choice: [a, b]\n"
                                     "doc_to_target: 0\ndataset_path: missing.jsonl\n")
    with pytest.raises(TaskError, match=r"t.yaml: field 'dataset_path': missing.jsonl not found"):
        resolve([str(tmp_path / "t.yaml")], None)


def test_benchmarks_during_training_and_workdir_equals_its_hf_export(tmp_path, data_dirs):
    """eval.benchmarks logs bench/<task>/acc at step 0 and at each evaluation; the last
    equals `medjax.evaluate` of the workdir, which equals evaluation of its HF export
    (a different loader, the tokenizer and config written by medjax.convert)."""
    import subprocess
    import sys

    from conftest import ROOT, load_config
    from medjax.evaluate import run as evaluate
    from medjax.training.loop import run
    main, _ = data_dirs
    c = load_config("sft", **{"steps": 2, "seq_len": 64, "logging.progress": False,
                              "checkpoint.every": 100, "eval.batches": 1, "eval.every": 2,
                              "eval.benchmarks.tasks": "medqa_4options,pubmedqa",
                              "eval.benchmarks.data_dir": main,
                              "eval.benchmarks.add_bos": "true"})
    wd = tmp_path / "wd"
    run(c, str(wd))
    rows = [json.loads(x) for x in open(wd / "metrics.jsonl")]
    bench = {r["step"]: r for r in rows if "bench/medqa_4options/acc" in r}
    assert sorted(bench) == [0, 2]
    assert "bench/medqa_4options/acc_norm" in bench[2] and "bench/pubmedqa/acc" in bench[2]
    quiet = dict(progress=False, print_fn=lambda *_: None, add_bos="true")
    ours = evaluate(str(wd), ["medqa_4options", "pubmedqa"], data_dir=main, **quiet)
    assert ours["results"]["medqa_4options"]["acc,none"] == bench[2]["bench/medqa_4options/acc"]
    hf = tmp_path / "hf"
    subprocess.run([sys.executable, "-m", "medjax.convert", "--to=hf", f"--src={wd}",
                    f"--dst={hf}"], check=True, cwd=ROOT, capture_output=True)
    theirs = evaluate(str(hf), ["medqa_4options", "pubmedqa"], data_dir=main, **quiet)
    for task in ("medqa_4options", "pubmedqa"):
        a = [x[0] for s in ours["samples"][task] for x in s["filtered_resps"]]
        b = [x[0] for s in theirs["samples"][task] for x in s["filtered_resps"]]
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
        assert [s["arguments"] for s in ours["samples"][task]] == \
            [s["arguments"] for s in theirs["samples"][task]]
