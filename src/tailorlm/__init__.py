"""tailorlm: adapt a pre-trained language model to your task, and measure how.

Prompt tuning (templates, few-shot demonstrations, soft prompts), fine tuning (LoRA, full) and
hybrids run side by side on your data; each run reports what it costs and what it buys.
"""

__version__ = "0.1.0"
