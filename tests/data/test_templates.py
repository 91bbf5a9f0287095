"""Chat templates: hand-derived layouts, loss masks, prompt/response splits, parity
with transformers' apply_chat_template over locally built tokenizer directories
carrying equivalent Jinja templates (written here), and errors."""

import functools
import json
import os
import shutil

import pytest

from medjax.data.templates import (ALPACA_PREAMBLE, AlpacaTemplate, Encoded, HFTemplate,
                                   get_template)
from medjax.data.tokenizer import (LLAMA3_PATTERN, MISTRAL_MODEL, _package_file,
                                   get_tokenizer)

# The Jinja that exports ship (medjax.data.hf_export): rendered by transformers, it must
# give the ids of medjax's own templates.
from medjax.data.hf_export import LLAMA3_JINJA, MISTRAL_JINJA  # noqa: E402

CONV = [
    {"role": "system", "content": "You are a careful medical assistant."},
    {"role": "user", "content": "What is anemia?"},
    {"role": "assistant", "content": "A low red blood cell count.\nIt has many causes."},
    {"role": "user", "content": "  Name one common cause. "},
    {"role": "assistant", "content": "Iron deficiency (about 50% of cases)."},
]


@pytest.fixture(scope="module")
def llama3_dir(tmp_path_factory):
    """A transformers fast tokenizer equal to Llama3Tokenizer (same tiktoken ranks,
    transformers' TikTokenConverter) carrying LLAMA3_JINJA."""
    from transformers import PreTrainedTokenizerFast
    from transformers.convert_slow_tokenizer import TikTokenConverter

    ours = get_tokenizer("llama3")
    specials = sorted(ours.special_tokens, key=ours.special_tokens.get)
    backend = TikTokenConverter(vocab_file=_package_file("llama_models", "llama3/tokenizer.model"),
                                pattern=LLAMA3_PATTERN, extra_special_tokens=specials).converted()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token="<|begin_of_text|>",
                                  eos_token="<|eot_id|>")
    tok.chat_template = LLAMA3_JINJA
    path = str(tmp_path_factory.mktemp("llama3_hf"))
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def mistral_dir(tmp_path_factory):
    """transformers.LlamaTokenizer over a copy of Mistral-7B-v0.1's SentencePiece model,
    legacy=True (every text run after a special token starts with "▁", as in the
    Hub's Mistral tokenizers), carrying MISTRAL_JINJA."""
    from transformers import LlamaTokenizer

    root = str(tmp_path_factory.mktemp("mistral_hf"))
    src, out = os.path.join(root, "src"), os.path.join(root, "hf")
    os.makedirs(src)
    shutil.copy(_package_file(*MISTRAL_MODEL), os.path.join(src, "tokenizer.model"))
    tok = LlamaTokenizer.from_pretrained(src, legacy=True)
    tok.chat_template = MISTRAL_JINJA
    tok.save_pretrained(out)
    cfg_path = os.path.join(out, "tokenizer_config.json")  # transformers 5 drops `legacy`
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["legacy"] = True
    with open(cfg_path, "w") as f:
        json.dump(cfg, f)
    return out


def trained_spans(enc: Encoded) -> list[list[int]]:
    """The maximal runs of ids whose mask is 1."""
    assert len(enc.ids) == len(enc.loss_mask) and set(enc.loss_mask) <= {0, 1}
    spans, cur = [], None
    for i, m in zip(enc.ids, enc.loss_mask):
        if m and cur is None:
            cur = []
            spans.append(cur)
        if m:
            cur.append(i)
        else:
            cur = None
    return spans


@functools.lru_cache(maxsize=4)
def _auto_tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def hf_ids(path, messages, **kw):
    """transformers' own apply_chat_template(tokenize=True) over the directory."""
    hf = _auto_tokenizer(path)
    return list(hf.apply_chat_template(messages, tokenize=True, return_dict=False, **kw))


# ------------------------------------------------------------------ llama3
def test_llama3_hand_derived_layout():
    tok = get_tokenizer("llama3")
    t = get_template("llama3", tok)
    conv = [{"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hi!"},
            {"role": "assistant", "content": " Hello. "}]
    e = tok.encode
    sh, eh, eot = 128006, 128007, 128009
    want = ([128000]
            + [sh, 9125, eh, 271] + e("Be brief.") + [eot]      # 9125 "system", 271 "\n\n"
            + [sh, 882, eh, 271] + e("Hi!") + [eot]             # 882 "user"
            + [sh, 78191, eh, 271] + e("Hello.") + [eot])       # 78191 "assistant"
    got = t.encode_conversation(conv)
    assert got.ids == want
    n = len(e("Hello.")) + 1
    assert got.loss_mask == [0] * (len(want) - n) + [1] * n
    assert tok.decode(got.ids) == (
        "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
        "<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>")


def test_llama3_multi_turn_mask():
    tok = get_tokenizer("llama3")
    enc = get_template("llama3", tok).encode_conversation(CONV)
    spans = trained_spans(enc)
    assert [tok.decode(s) for s in spans] == [
        "A low red blood cell count.\nIt has many causes.<|eot_id|>",
        "Iron deficiency (about 50% of cases).<|eot_id|>"]
    assert sum(enc.loss_mask) == sum(len(s) for s in spans)


TOOL_CONV = [
    {"role": "user", "content": "Dose for 70 kg at 15 mg/kg?"},
    {"role": "assistant", "content": '{"name": "multiply", "arguments": [70, 15]}'},
    {"role": "tool", "content": "1050"},
    {"role": "assistant", "content": "1050 mg."},
]


def test_llama3_tool_messages_take_the_ipython_role_and_are_not_trained():
    """A tool role was refused by every format and template."""
    tok = get_tokenizer("llama3")
    enc = get_template("llama3", tok).encode_conversation(TOOL_CONV)
    text = tok.decode(enc.ids)
    assert "<|start_header_id|>ipython<|end_header_id|>\n\n1050<|eot_id|>" in text
    assert [tok.decode(s) for s in trained_spans(enc)] == [
        '{"name": "multiply", "arguments": [70, 15]}<|eot_id|>', "1050 mg.<|eot_id|>"]
    with pytest.raises(ValueError, match="no layout for"):
        get_template("mistral", get_tokenizer("mistral")).encode_conversation(TOOL_CONV)


def test_llama3_equals_transformers_apply_chat_template(llama3_dir):
    t = get_template("llama3", get_tokenizer("llama3"))
    assert t.encode_conversation(TOOL_CONV).ids == hf_ids(llama3_dir, TOOL_CONV)
    assert t.encode_prompt(TOOL_CONV[:3]) == hf_ids(llama3_dir, TOOL_CONV[:3],
                                                     add_generation_prompt=True)
    for conv in (CONV, CONV[1:], CONV[:3]):
        assert t.encode_conversation(conv).ids == hf_ids(llama3_dir, conv)
    for prompt in (CONV[:2], CONV[:4], CONV[1:4]):
        assert t.encode_prompt(prompt) == hf_ids(llama3_dir, prompt, add_generation_prompt=True)


def test_hf_template_equals_builtin_llama3(llama3_dir):
    tok = get_tokenizer(llama3_dir)
    assert tok.chat_template == LLAMA3_JINJA
    hf_t, ours = get_template("hf", tok), get_template("llama3", get_tokenizer("llama3"))
    assert isinstance(hf_t, HFTemplate)
    for conv in (CONV, CONV[1:3], TOOL_CONV):
        assert hf_t.encode_conversation(conv) == ours.encode_conversation(conv)
    assert hf_t.encode_prompt(CONV[:4]) == ours.encode_prompt(CONV[:4])
    assert hf_t.encode_response(" Yes. ") == ours.encode_response(" Yes. ")
    assert hf_t.encode_response("Yes.", prompt=CONV[:4]) == ours.encode_response("Yes.")
    # The built-in llama3 template also runs over the HF directory's tokenizer.
    assert get_template("llama3", tok).encode_conversation(CONV) == ours.encode_conversation(CONV)


def test_special_token_strings_in_content_stay_text(llama3_dir):
    conv = [{"role": "user", "content": "Say <|eot_id|> please"},
            {"role": "assistant", "content": "<|eot_id|> and <|begin_of_text|>"}]
    for tok in (get_tokenizer("llama3"), get_tokenizer(llama3_dir)):
        for name in ("llama3", "hf"):
            if name == "hf" and tok.chat_template is None:
                continue
            enc = get_template(name, tok).encode_conversation(conv)
            assert enc.ids.count(128009) == 2 and enc.ids.count(128000) == 1, (tok, name)


# ------------------------------------------------------------------ mistral
def test_mistral_hand_derived_layout():
    tok = get_tokenizer("mistral")
    t = get_template("mistral", tok)
    e = tok.encode
    inst, close = [733, 16289, 28793], [733, 28748, 16289, 28793]  # "▁[INST]", "▁[/INST]"
    assert e("[INST] Hi [/INST]") == inst + e("Hi") + close
    enc = t.encode_conversation([{"role": "system", "content": "Be brief."},
                                 {"role": "user", "content": "Hi"},
                                 {"role": "assistant", "content": "Hello"},
                                 {"role": "user", "content": "Bye"},
                                 {"role": "assistant", "content": "Bye now"}])
    want = ([1] + e("[INST] Be brief.\n\nHi [/INST]") + [22557, 2]  # 22557 "▁Hello"
            + e("[INST] Bye [/INST]") + e("Bye now") + [2])
    assert enc.ids == want
    assert want[1:4] == inst and want[-4:] == e("Bye now") + [2]
    assert [tok.decode(s) for s in trained_spans(enc)] == ["Hello</s>", "Bye now</s>"]
    assert tok.decode(enc.ids) == ("<s>[INST] Be brief.\n\nHi [/INST] Hello</s>"
                                   "[INST] Bye [/INST] Bye now</s>")


def test_mistral_equals_transformers_apply_chat_template(mistral_dir):
    t = get_template("mistral", get_tokenizer("mistral"))
    for conv in (CONV, CONV[1:], CONV[:3]):
        assert t.encode_conversation(conv).ids == hf_ids(mistral_dir, conv)
    for prompt in (CONV[:2], CONV[:4], CONV[1:4]):
        assert t.encode_prompt(prompt) == hf_ids(mistral_dir, prompt, add_generation_prompt=True)
    # The same through medjax's "hf" template, masks included.
    hf_t = get_template("hf", get_tokenizer(mistral_dir))
    assert hf_t.encode_conversation(CONV) == t.encode_conversation(CONV)
    assert hf_t.encode_response("Yes.", prompt=CONV[:4]) == t.encode_response("Yes.")


def test_mistral_role_order_errors():
    t = get_template("mistral", get_tokenizer("mistral"))
    S, U, A = ({"role": r, "content": "x"} for r in ("system", "user", "assistant"))
    for conv, match in [([A, U], r"messages\[0\] is from the assistant but the user"),
                        ([U, U, A], r"messages\[1\] is from the user but the assistant"),
                        ([S, U, A, U, A, A], r"messages\[5\] is from the assistant"),
                        ([U, A, S, U, A], r"messages\[2\] is a system message"),
                        ([S, A], r"messages\[1\] is from the assistant"),
                        ([S, S, U, A], r"messages\[1\] is a system message")]:
        with pytest.raises(ValueError, match=match):
            t.encode_conversation(conv)
    with pytest.raises(ValueError, match="a prompt must end with a user or tool message"):
        t.encode_prompt([S])


# ------------------------------------------------------------------ alpaca
@pytest.mark.parametrize("name", ["llama3", "mistral"])
def test_alpaca_layout_and_mask(name):
    tok = get_tokenizer(name)
    t = get_template("alpaca", tok)
    assert isinstance(t, AlpacaTemplate)
    plain = t.encode_conversation(None, alpaca={"instruction": "Define fever.", "input": "",
                                                "output": "A raised body temperature."})
    text = (ALPACA_PREAMBLE + "### Instruction:\nDefine fever.\n\n### Response:\n"
            "A raised body temperature.")
    assert text.startswith("Below is an instruction that describes a task. Write a response")
    # Segment-wise ids equal the standard one-string tokenization of the whole text.
    assert plain.ids == [tok.bos_id] + tok.encode(text) + [tok.eos_id]
    assert [tok.decode(s) for s in trained_spans(plain)] == [
        "A raised body temperature." + tok.decode([tok.eos_id])]
    # From a [user, assistant] conversation: the same.
    msgs = [{"role": "user", "content": "Define fever."},
            {"role": "assistant", "content": "A raised body temperature."}]
    assert t.encode_conversation(msgs) == plain

    with_input = t.encode_conversation(None, alpaca={
        "instruction": "Classify the value.", "input": "Glucose 250 mg/dL", "output": "High."})
    text = ("Below is an instruction that describes a task, paired with an input that provides "
            "further context. Write a response that appropriately completes the request.\n\n"
            "### Instruction:\nClassify the value.\n\n### Input:\nGlucose 250 mg/dL\n\n"
            "### Response:\nHigh.")
    assert with_input.ids == [tok.bos_id] + tok.encode(text) + [tok.eos_id]
    assert sum(with_input.loss_mask) == len(tok.encode_continuation("High.")) + 1


def test_alpaca_errors():
    t = get_template("alpaca", get_tokenizer("llama3"))
    S, U, A = ({"role": r, "content": "x"} for r in ("system", "user", "assistant"))
    with pytest.raises(ValueError, match="alpaca template: expected messages with roles"):
        t.encode_conversation([U, A, U, A])
    with pytest.raises(ValueError, match="no system message"):
        t.encode_conversation([S, U, A])
    with pytest.raises(ValueError, match="empty assistant response"):
        t.encode_conversation(None, alpaca={"instruction": "x", "output": " "})


# ------------------------------------------------------------------ shared
@pytest.mark.parametrize("name", ["llama3", "mistral", "alpaca"])
def test_prompt_plus_response_equals_conversation(name):
    tok = get_tokenizer("llama3" if name == "llama3" else "mistral")
    t = get_template(name, tok)
    prompts = [CONV[1:2]] if name == "alpaca" else [CONV[:2], CONV[:4], CONV[1:4]]
    for prompt in prompts:
        for response in ["Iron deficiency.", "  42 mg/dL\nsecond line  "]:
            conv = prompt + [{"role": "assistant", "content": response}]
            p, r = t.encode_prompt(prompt), t.encode_response(response)
            whole = t.encode_conversation(conv)
            assert whole.ids == p + r and whole.loss_mask[len(p):] == [1] * len(r)
            # The prompt's mask is that of the earlier assistant turns only.
            earlier = [m for m in prompt if m["role"] == "assistant"]
            assert sum(whole.loss_mask[:len(p)]) == sum(
                len(t.encode_response(m["content"])) for m in earlier)


@pytest.mark.parametrize("name", ["llama3", "mistral", "alpaca"])
def test_common_errors(name):
    t = get_template(name, get_tokenizer("llama3" if name != "mistral" else "mistral"))
    with pytest.raises(ValueError, match="empty assistant message"):
        t.encode_conversation([{"role": "user", "content": "hi"},
                               {"role": "assistant", "content": "  \n"}])
    with pytest.raises(ValueError, match="empty assistant response"):
        t.encode_response("")
    with pytest.raises(ValueError, match=r"messages\[1\].role is 'robot'"):
        t.encode_conversation([{"role": "user", "content": "hi"},
                               {"role": "robot", "content": "x"}])
    with pytest.raises(ValueError, match=r"messages\[0\].content is NoneType"):
        t.encode_conversation([{"role": "user", "content": None}])
    with pytest.raises(ValueError, match="non-empty list"):
        t.encode_conversation([])
    if name != "alpaca":
        with pytest.raises(ValueError, match="no assistant message"):
            t.encode_conversation([{"role": "user", "content": "hi"}])
        with pytest.raises(ValueError, match="must end with a user or tool message"):
            t.encode_prompt([{"role": "user", "content": "hi"},
                             {"role": "assistant", "content": "yo"}])


def test_template_selection_errors():
    with pytest.raises(ValueError, match=r"data\.template.*'chatml'.*'llama3', 'mistral'"):
        get_template("chatml", get_tokenizer("llama3"))
    with pytest.raises(ValueError, match="needs the Llama-3 special tokens"):
        get_template("llama3", get_tokenizer("mistral"))
    with pytest.raises(ValueError, match="template 'hf' needs a Hugging Face tokenizer"):
        get_template("hf", get_tokenizer("llama3"))


def test_hf_template_rejects_prefix_unstable_templates(llama3_dir, tmp_path):
    """A template that renders the last assistant turn differently from earlier ones
    can not be masked from prefixes: a clear error rather than a wrong mask."""
    from transformers import AutoTokenizer

    hf = AutoTokenizer.from_pretrained(llama3_dir)
    hf.chat_template = LLAMA3_JINJA.replace(
        "{{- '<|start_header_id|>' + ",
        "{%- if loop.last and m['role'] == 'assistant' %}{{- 'FINAL ' }}{%- endif %}"
        "{{- '<|start_header_id|>' + ")
    hf.save_pretrained(str(tmp_path))
    t = get_template("hf", get_tokenizer(str(tmp_path)))
    with pytest.raises(ValueError, match="not a token prefix"):
        t.encode_conversation(CONV)
    with pytest.raises(ValueError, match="starts with an assistant"):
        t.encode_conversation(CONV[2:])
