"""The offline Qwen tokenizer (``verl_epo.embedded.qwen_tokenizer``) against tiktoken, on the games' text.

The text is real: prompts of expert episodes (exactly what the agent loop renders each turn) and
observations / admissible-action lists of random play, for the synthetic game, ScienceWorld and ALFWorld.
"""

from __future__ import annotations

import asyncio
import random
import unicodedata

import pytest

from env_adapters.base import make_game, task_set
from env_adapters.corpus import play_random
from env_adapters.episode import EpisodeSettings, play_episode
from env_adapters.expert import expert_policy
from env_adapters.parsing import parse_action
from env_adapters.prompting import Turn, build_messages, format_action
from verl_epo.embedded import qwen_tokenizer as qt

GAMES = {"synthetic": "synthetic/train", "sciworld": "sciworld/l0-train", "alfworld": "alfworld/train"}


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """Loaded the way verl and vLLM load a model's tokenizer: ``AutoTokenizer.from_pretrained``."""
    from transformers import AutoTokenizer

    folder = qt.build_qwen_tokenizer(tmp_path_factory.mktemp("qwen") / "tokenizer")
    return AutoTokenizer.from_pretrained(folder, local_files_only=True)


@pytest.fixture(scope="module")
def encoding():
    return qt.tiktoken_encoding()


def expert_prompts(game_name: str, set_name: str, episodes: int = 2) -> list[list[dict[str, str]]]:
    """Every turn's messages (and the expert's answer) of ``episodes`` expert episodes, 8 turns at most."""
    game = make_game(game_name)
    settings = EpisodeSettings(max_turns=8, history_turns=2)
    conversations = []
    try:
        for spec in task_set(set_name)[:episodes]:
            result = asyncio.run(play_episode(game, spec, expert_policy(game_name, game), settings))
            assert result.failure is None, result.failure
            conversations += [[*r.messages, {"role": "assistant", "content": r.response}] for r in result.turns]
    finally:
        game.close()
    return conversations


@pytest.fixture(scope="module")
def game_text() -> dict[str, dict[str, list]]:
    """Per game: expert conversations and the lines of 2 random episodes (10 steps each)."""
    return {game: {"conversations": expert_prompts(game, set_name),
                   "lines": list(play_random(game, episodes=2, max_steps=10, seed=0))}
            for game, set_name in GAMES.items()}


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_folder_has_the_qwen_vocabulary_and_chatml_specials(tokenizer):
    assert len(tokenizer) == qt.BPE_RANKS + 3 == 151646 <= qt.QWEN25_EMBEDDING_ROWS == 151936
    for token, want in {"<|endoftext|>": 151643, "<|im_start|>": 151644, "<|im_end|>": 151645}.items():
        assert tokenizer.convert_tokens_to_ids(token) == want
        assert ids(tokenizer, token) == [want]  # one token, never split into bytes
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    # ids every Qwen2.5 checkpoint gives these (its tokenizer.json): a wrong rank order would move them
    assert ids(tokenizer, "Hello world") == [9707, 1879]
    assert ids(tokenizer, "system\nuser\nassistant") == [8948, 198, 872, 198, 77091]


def test_equals_tiktoken_token_for_token_on_game_text(tokenizer, encoding, game_text):
    checked = {}
    for game, text in game_text.items():
        rendered = [tokenizer.apply_chat_template(c, tokenize=False) for c in text["conversations"]]
        pieces = rendered + text["lines"]
        assert text["conversations"] and text["lines"], game
        for piece in pieces:
            want = encoding.encode(unicodedata.normalize("NFC", piece), allowed_special="all")
            assert ids(tokenizer, piece) == want, (game, piece[:200])
        checked[game] = sum(len(p) for p in pieces)
    assert min(checked.values()) > 2_000, checked  # real amounts of text from every game


def test_equals_tiktoken_where_tokenizers_commonly_differ(tokenizer, encoding):
    """Digit runs (Qwen's vocabulary has no token of two digits), spacing,
    unicode that NFC changes, bytes a word never decodes from, and specials inside text."""
    samples = ["score 12345 of 100000", "a  b   c\t\td\n\n\n  e", "cafe\u0301 na\u00efve \u00c5ngstr\u00f6m",
               "\U0001f600 \u6bd5\u8001\u5e08 \u0442\u0432\u0451\u0440\u0434\u044b\u0439",
               "x<|im_end|>y<|endoftext|>", "it's we'LL they'RE", "   leading and trailing   ",
               "".join(chr(random.Random(0).randrange(32, 0x3000)) for _ in range(400))]
    for sample in samples:
        want = encoding.encode(unicodedata.normalize("NFC", sample), allowed_special="all")
        assert ids(tokenizer, sample) == want, sample
    assert ids(tokenizer, "2024") == [17, 15, 17, 19]  # one token per digit


def test_chat_template_has_qwen25_structure(tokenizer):
    messages = [{"role": "system", "content": "S"}, {"role": "user", "content": "U1"},
                {"role": "assistant", "content": "A1"}, {"role": "user", "content": "U2"}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    assert text == ("<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n"
                    "<|im_start|>assistant\nA1<|im_end|>\n<|im_start|>user\nU2<|im_end|>\n<|im_start|>assistant\n")
    no_prompt = tokenizer.apply_chat_template(messages, tokenize=False)
    assert text == no_prompt + "<|im_start|>assistant\n"
    # no system message: a default one comes first, as in Qwen2.5's template
    bare = tokenizer.apply_chat_template(messages[1:2], add_generation_prompt=True, tokenize=False)
    assert bare == f"<|im_start|>system\n{qt.DEFAULT_SYSTEM}<|im_end|>\n<|im_start|>user\nU1<|im_end|>\n" \
                   "<|im_start|>assistant\n"
    token_ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True)
    if not isinstance(token_ids, list):
        token_ids = token_ids["input_ids"]
    assert token_ids[:3] == [151644, 8948, 198] and token_ids[-3:] == [151644, 77091, 198]
    assert token_ids.count(151644) == 5 and token_ids.count(151645) == 4


def test_the_warm_start_finds_the_answer_tokens(tokenizer, game_text):
    """The warm start's labels are the answer + ``<|im_end|>``, from the same template."""
    from verl_epo.embedded.warm_start import tokenize_row

    conversation = game_text["alfworld"]["conversations"][0]
    input_ids, labels = tokenize_row(tokenizer, conversation)
    answer = [t for t in labels if t != -100]
    assert answer[-1] == 151645
    assert tokenizer.decode(answer[:-1]) == conversation[-1]["content"]
    assert input_ids[-len(answer):] == answer


def test_responses_round_trip_and_parse(tokenizer, game_text):
    """Every expert answer survives encode -> decode exactly and parses to its action."""
    for game, text in game_text.items():
        for conversation in text["conversations"]:
            response = conversation[-1]["content"]
            token_ids = ids(tokenizer, response)
            decoded = tokenizer.decode(token_ids)
            assert decoded == response, game
            assert parse_action(decoded) == parse_action(response) is not None, response
        for line in text["lines"]:
            assert tokenizer.decode(ids(tokenizer, line)) == unicodedata.normalize("NFC", line)


def test_a_response_cut_at_the_token_limit_is_no_action(tokenizer):
    """verl stops a response at ``response_length`` tokens: every cut before the closing tag's last
    token is an invalid action (strict), and no cut makes a different action."""
    response = format_action("put the mug in the coffee machine 1") + "<|im_end|>"
    token_ids = ids(tokenizer, response)
    close = len(ids(tokenizer, response.split("</action>")[0] + "</action>"))
    assert close < len(token_ids) and token_ids[-1] == 151645
    for cut in range(len(token_ids) + 1):
        parsed = parse_action(tokenizer.decode(token_ids[:cut], skip_special_tokens=True))
        assert parsed == ("put the mug in the coffee machine 1" if cut >= close else None), cut
    # a cut inside a character of several tokens (U+1FAB7, 3 byte-level tokens) decodes to U+FFFD,
    # never an exception or another action
    assert len(ids(tokenizer, "\U0001fab7")) == 3
    lotus = ids(tokenizer, "<action>\U0001fab7</action>")
    partial = [tokenizer.decode(lotus[:cut]) for cut in range(len(lotus))]
    assert sum("\ufffd" in p for p in partial) >= 2
    assert all(parse_action(p) is None for p in partial)


def test_lenient_parser_on_decoded_free_text(tokenizer):
    admissible = ["go to countertop 1", "go to countertop 12", "open fridge 1"]
    text = "I think I should go to countertop 12 now."
    decoded = tokenizer.decode(ids(tokenizer, text))
    assert parse_action(decoded, admissible, mode="lenient") == "go to countertop 12"
    assert parse_action(decoded, admissible, mode="strict") is None


def test_prompt_builder_tokens_and_left_truncation(tokenizer, game_text):
    """Prompts built by ``build_messages`` tokenize to ChatML blocks; a left-truncated prompt (what
    verl does beyond ``rollout.prompt_length``) keeps the generation prompt and the action list."""
    conversation = game_text["sciworld"]["conversations"][-1][:-1]
    prompt_ids = tokenizer.apply_chat_template(conversation, add_generation_prompt=True)
    if not isinstance(prompt_ids, list):
        prompt_ids = prompt_ids["input_ids"]
    text = tokenizer.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert prompt_ids == ids(tokenizer, text)  # the template path and plain encoding agree
    assert len(prompt_ids) < len(text) / 2.5  # real BPE compresses game text (about 4 characters a token)
    kept = prompt_ids[-128:]
    tail = tokenizer.decode(kept)
    assert tail.endswith("Your action (inside <action></action>):<|im_end|>\n<|im_start|>assistant\n")
    assert "<|im_start|>system" not in tail  # the left end (system prompt, task) is what is lost
    # more history, more tokens: the window the prompt builder shows is what the count measures
    turns = [Turn("look around", "You are in the kitchen. " * 10)] * 3
    lengths = [len(tokenizer.apply_chat_template(build_messages("boil water", "obs", turns[:n], "look around",
                                                                n, 30), tokenize=False)) for n in range(4)]
    assert lengths == sorted(lengths) and len(set(lengths)) == 4
