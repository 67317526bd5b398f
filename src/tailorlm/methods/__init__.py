"""Methods: one module per method, each registered under the one name used everywhere."""

from tailorlm.methods import few_shot, prompt_template  # noqa: F401  (registers them)
from tailorlm.methods import full, lora  # noqa: F401
from tailorlm.methods import prefix, soft_prompt  # noqa: F401
from tailorlm.methods import instruction_search  # noqa: F401
from tailorlm.methods.contract import Adapter, MethodConfig, MethodSpec
from tailorlm.methods.index import METHODS, get_method

__all__ = ["METHODS", "Adapter", "MethodConfig", "MethodSpec", "get_method"]
