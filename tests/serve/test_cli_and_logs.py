"""`tailor serve`'s command line, and the one log line per request."""

from __future__ import annotations

import logging

import openai
import pytest

from serve.conftest import KEY, make_app
from serve.live import LiveServer
from tailorlm.cli.main import main


def test_help_lists_the_limits(capsys):
    with pytest.raises(SystemExit):
        main(["serve", "--help"])
    out = capsys.readouterr().out
    for flag in ("--registry", "--adapter", "--api-key-env", "--max-resident-mb", "--max-body-mb",
                 "--max-tokens-limit", "--max-n", "--max-queue", "--request-timeout-s",
                 "--log-prompts"):
        assert flag in out


def test_refuses_an_open_server_on_a_public_host(monkeypatch, capsys):
    monkeypatch.delenv("TAILOR_API_KEY", raising=False)
    assert main(["serve", "--host", "0.0.0.0", "--model", "tiny"]) == 2
    err = capsys.readouterr().err
    assert "TAILOR_API_KEY is not set" in err and len(err.strip().splitlines()) == 1


def test_bad_adapter_flags_are_one_line(tmp_path, capsys):
    assert main(["serve", "--adapter", "no-equals-sign"]) == 2
    assert "NAME=DIR" in capsys.readouterr().err
    assert main(["serve", "--adapter", f"x={tmp_path}"]) == 2
    assert "not an adapter folder" in capsys.readouterr().err


def test_bad_limits_are_one_line(capsys):
    from tailorlm.errors import TailorError
    from tailorlm.serve.config import ServeConfig

    with pytest.raises(TailorError, match="--max-n must be positive"):
        ServeConfig(max_n=0)


@pytest.mark.parametrize("log_prompts", [False, True])
def test_one_log_line_per_request_without_prompt_text(registry_root, caplog, log_prompts):
    secret = "my secret prompt text"
    with caplog.at_level(logging.INFO, logger="tailorlm.serve"):
        with LiveServer(make_app(registry_root, log_prompts=log_prompts)) as s:
            client = openai.OpenAI(base_url=s.url, api_key=KEY, max_retries=0)
            client.completions.create(model="sentiment", prompt=secret)
            with pytest.raises(openai.NotFoundError):
                client.completions.create(model="nope", prompt=secret)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request ")]
    assert len(lines) == 2
    ok, missing = lines
    assert "adapter=sentiment:2" in ok and "status=200" in ok and "ms=" in ok
    assert "prompt_tokens=" in ok and "completion_tokens=" in ok and "id=cmpl-" in ok
    assert "adapter=- " in missing and "status=404" in missing
    assert (secret in ok) == log_prompts
    assert all(KEY not in r.getMessage() for r in caplog.records)
