"""Chat templates: SmolLM2's real template, ChatML fallback, roles and errors."""
from __future__ import annotations

from pathlib import Path

import pytest

from edgert.errors import InputError, PackageError
from edgert.llm.chat import CHATML_TEMPLATE, ChatTemplate

pytest.importorskip("jinja2")

SMOLLM2 = (Path(__file__).resolve().parent / "data" / "smollm2_chat_template.jinja").read_text()


def test_smollm2_default_system_prompt():
    t = ChatTemplate(SMOLLM2, "<|im_start|>", "<|im_end|>")
    assert t.render([{"role": "user", "content": "Hi"}]) == (
        "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n"
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_smollm2_own_system_and_no_generation_prompt():
    t = ChatTemplate(SMOLLM2, "<|im_start|>", "<|im_end|>")
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello!"}]
    assert t.render(msgs, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        "<|im_start|>assistant\nHello!<|im_end|>\n")


def test_chatml_fallback():
    t = ChatTemplate.for_package(None)
    assert t.source == CHATML_TEMPLATE
    assert t.render([{"role": "user", "content": "Hi"}]) == \
        "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    assert ChatTemplate.for_package(SMOLLM2).source == SMOLLM2


def test_roles():
    t = ChatTemplate(SMOLLM2, "", "")
    with pytest.raises(InputError, match=r"unknown chat role 'x' \(known: system, user, assistant\)"):
        t.render([{"role": "x", "content": "Hi"}])
    with pytest.raises(InputError, match="unknown chat role 'tool'"):
        t.render([{"role": "tool", "content": "42"}])
    tools = ChatTemplate("{% for m in messages %}{% if m.role == 'tool' %}T:{% endif %}{{ m.content }}\n"
                         "{% endfor %}", "", "")
    assert tools.roles == ("system", "user", "assistant", "tool")
    assert tools.render([{"role": "tool", "content": "42"}]) == "T:42\n"
    for bad in ([{"role": "user"}], [{"role": "user", "content": 3}], ["hi"], {"role": "user"}):
        with pytest.raises(InputError):
            t.render(bad)


def test_environment_like_transformers():
    # trim_blocks / lstrip_blocks, tojson without HTML escaping, bos/eos, raise_exception
    src = ("{{ bos_token }}\n  {% for m in messages %}\n{{ m | tojson }}\n  {% endfor %}\n{{ eos_token }}")
    out = ChatTemplate(src, "<s>", "</s>").render([{"role": "user", "content": "a<b & é"}])
    assert out == '<s>\n{"role": "user", "content": "a<b & é"}\n</s>'
    alt = ChatTemplate("{% if messages[0]['role'] != 'user' %}{{ raise_exception('must start with user') }}"
                       "{% endif %}ok", "", "")
    assert alt.render([{"role": "user", "content": ""}]) == "ok"
    with pytest.raises(InputError, match="must start with user"):
        alt.render([{"role": "system", "content": ""}])


def test_template_errors_are_package_errors():
    with pytest.raises(PackageError, match="does not compile"):
        ChatTemplate("{% for m in messages %}", "", "")
    with pytest.raises(PackageError, match="failed"):
        ChatTemplate("{{ messages[0].content + 1 }}", "", "").render([{"role": "user", "content": "x"}])
    # the sandbox refuses attribute games
    with pytest.raises(PackageError):
        ChatTemplate("{{ messages.__class__.__mro__ }}{{ ''.__class__.__subclasses__() }}", "", "").render([])
