"""verl-epo: EPO (Entropy-regularized Policy Optimization) as a verl 0.9.1 plug-in."""

from setuptools import find_packages, setup

setup(
    name="verl-epo",
    version="0.1.0",
    description="EPO for multi-turn LLM agents, as a plug-in for verl",
    packages=find_packages(include=["verl_epo", "verl_epo.*", "env_adapters", "env_adapters.*"]),
    python_requires=">=3.10",
    install_requires=[
        "verl==0.9.1",
        "torch>=2.6",
        "ray>=2.41",
        "transformers>=5.5.3,<5.11",
        "omegaconf>=2.3",
        "scienceworld==1.2.3",
        "alfworld==0.4.2",
        "matplotlib",
        "pandas",
        "pyarrow",
        "tqdm",
    ],
    extras_require={
        "gpu": ["vllm"],
        "dev": ["pytest", "ruff"],
    },
    entry_points={
        "verl.plugins": ["verl_epo = verl_epo.plugin", "env_adapters = env_adapters.agent_loop"],
        "console_scripts": [
            "verl-epo-eval = env_adapters.evaluate:main",
            "verl-epo-report = verl_epo.report:main",
        ],
    },
)
