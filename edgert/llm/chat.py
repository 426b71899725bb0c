"""Chat templates: the model's own jinja2 template (the GGUF's tokenizer.chat_template), rendered
the way HF transformers renders it, or ChatML when the package has none.

jinja2 is imported when a template is built.  The environment matches transformers'
`_compile_jinja_template`: a sandbox (a package's template is untrusted code), trim_blocks and
lstrip_blocks, the loopcontrols extension, a `raise_exception` global, a `tojson` filter that does
not HTML-escape, and `strftime_now`.
"""
from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from edgert.errors import BackendUnavailable, InputError, PackageError

# ChatML (the format SmolLM2, Qwen and others use) without a default system prompt
CHATML_TEMPLATE = ("{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + "
                   "message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
                   "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
BASE_ROLES = ("system", "user", "assistant")


class _TemplateRaised(Exception):
    """raise_exception(...) called by the template: its message is about the messages given."""


def _raise_exception(message: str):
    raise _TemplateRaised(str(message))


def _tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None, separators=None,
            sort_keys: bool = False) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split())
    line = getattr(e, "lineno", None)
    return f"{text} (line {line})" if line else text


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = ""):
        try:
            import jinja2
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as e:
            raise BackendUnavailable("chat templates need the jinja2 package: pip install jinja2") from e
        self._jinja2 = jinja2
        self.source, self.bos_token, self.eos_token = source, bos_token, eos_token
        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            self._template = env.from_string(source)
        except jinja2.TemplateError as e:
            raise PackageError(f"chat template does not compile: {_one_line(e)}") from e
        # a template that handles tool messages names the role somewhere in its source
        self.roles = BASE_ROLES + (("tool",) if re.search(r"\btool\b", source) else ())

    @classmethod
    def for_package(cls, source: str | None, bos_token: str = "", eos_token: str = "") -> "ChatTemplate":
        """The package's template, or ChatML when it has none."""
        return cls(source if source else CHATML_TEMPLATE, bos_token, eos_token)

    def render(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        if not isinstance(messages, list):
            raise InputError(f"chat messages must be a list, got {type(messages).__name__}")
        clean = []
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or not isinstance(m.get("role"), str) or \
                    not isinstance(m.get("content"), str):
                raise InputError(f"chat message {i} must be an object with string 'role' and 'content'")
            if m["role"] not in self.roles:
                raise InputError(f"unknown chat role {m['role']!r} (known: {', '.join(self.roles)})")
            clean.append(dict(m))
        try:
            return self._template.render(messages=clean, add_generation_prompt=add_generation_prompt,
                                         bos_token=self.bos_token, eos_token=self.eos_token)
        except _TemplateRaised as e:
            raise InputError(f"chat template refused the messages: {e}") from e
        except (self._jinja2.TemplateError, TypeError, ValueError, KeyError, IndexError,
                AttributeError, ZeroDivisionError, OverflowError, RecursionError, MemoryError) as e:
            # the sandbox raises OverflowError for range() over 100000; a package's template is data
            raise PackageError(f"chat template failed: {type(e).__name__}: {_one_line(e)}") from e
