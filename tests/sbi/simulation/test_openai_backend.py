import pytest

from brainrl.brain.base import Failed
from brainrl.sbi.simulation.generators import GENERATORS, GeneratorConfig, OpenAIChatGenerator
from brainrl.sbi.simulation.prompts import generator_messages

from sbi_fakes import FakeChatServer


@pytest.fixture
def env(monkeypatch):
    def set_base(url):
        monkeypatch.setenv("TEST_LLM_BASE", url)
        monkeypatch.setenv("TEST_LLM_KEY", "sk-test")
    return set_base


def _gen(**kw):
    return OpenAIChatGenerator(model="tiny-chat", base_url_env="TEST_LLM_BASE", api_key_env="TEST_LLM_KEY",
                               backoff_s=0.01, **kw)


def test_posts_openai_chat_completions_and_returns_content(env):
    with FakeChatServer(["first reply", "second reply"]) as server:
        env(server.base_url)
        gen = GeneratorConfig("openai", {"model": "tiny-chat", "base_url_env": "TEST_LLM_BASE",
                                       "api_key_env": "TEST_LLM_KEY", "concurrency": 1}).build()
        convs = [generator_messages([0.5] * 6, "weather"), generator_messages([0.1] * 6, "sports")]
        assert gen.generate(convs, [11, 12]) == ["first reply", "second reply"]
    body = server.requests[0]
    assert body["model"] == "tiny-chat" and body["messages"] == convs[0] and body["seed"] == 11
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    assert gen.identity()["backend"] == "openai" and "openai" in GENERATORS.names()


def test_retries_server_errors_then_succeeds(env):
    with FakeChatServer([503, 500, "ok now"]) as server:
        env(server.base_url)
        assert _gen(max_retries=3).generate([[{"role": "user", "content": "hi"}]], [0]) == ["ok now"]
    assert len(server.requests) == 3


def test_bounded_retries_and_client_errors_fail_the_item(env):
    with FakeChatServer([500]) as server:
        env(server.base_url)
        (out,) = _gen(max_retries=2).generate([[{"role": "user", "content": "hi"}]], [0])
    assert isinstance(out, Failed) and "after 3 attempts" in out.reason and len(server.requests) == 3
    with FakeChatServer([401]) as server:
        env(server.base_url)
        (out,) = _gen(max_retries=2).generate([[{"role": "user", "content": "hi"}]], [0])
    assert isinstance(out, Failed) and "HTTP 401" in out.reason and len(server.requests) == 1


def test_timeout_is_retried(env):
    with FakeChatServer([("sleep", 0.6, "late"), "on time"]) as server:
        env(server.base_url)
        assert _gen(timeout_s=0.2, max_retries=1).generate([[{"role": "user", "content": "x"}]], [0]) == ["on time"]


def test_missing_base_url_names_the_variable(monkeypatch):
    monkeypatch.delenv("NOPE_BASE", raising=False)
    with pytest.raises(ValueError, match=r"\$NOPE_BASE"):
        OpenAIChatGenerator(model="m", base_url_env="NOPE_BASE")
