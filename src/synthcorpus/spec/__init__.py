"""The corpus spec: one YAML file in ``include/corpora/`` validated into a typed :class:`CorpusSpec`.

One module per section (``seeds``, ``topics``, ``prompts``, ``generation``, ``quality``, ``corpus`` for
the top level and ``storage``/``publish``), the shared names in ``vocabulary``, loading and error
reporting in ``loading``. Imported at DAG parse time, so it stays light: pydantic and PyYAML only.
Every problem is reported with the file, the dotted field path and what was expected. Relative paths
inside a spec resolve against the directory of the spec file. The spec imports no stage and no
algorithm (enforced by the import contract in pyproject.toml).
"""

from .corpus import CorpusSpec, PublishSpec, StorageSpec
from .generation import GenerationSpec, KubernetesSpec, OpenAISpec, VLLMSpec
from .judge import JudgeGateSpec, JudgeSpec
from .loading import SpecError, SpecProblem, discover, load_spec, parse_spec
from .prompts import PromptsSpec
from .refresh import RefreshSpec
from .quality import (
    Bounds,
    DecontamReference,
    DecontamSpec,
    HeuristicsSpec,
    NearDedupSpec,
    QualitySpec,
    UserExpectation,
)
from .seeds import SampleClean, SampleSource, SeedsSpec
from .tasks import TasksSpec
from .topics import DEFAULT_TOPIC_DENY, TopicsSpec
from .vocabulary import (
    AUDIENCES,
    BALANCE_DIMENSIONS,
    BUNDLED_MODEL,
    CPU_GENERATE_POOL,
    CPU_THREADS_ENV,
    DEFAULT_MAX_MAP_LENGTH,
    FORMATS,
    GATE_COLUMNS,
    GPU_GENERATE_POOL,
    LANGUAGES,
    REASONS,
    STORAGE_ENV,
    WORD_QUANTILES,
    Audience,
    Format,
    Language,
    gate_columns,
)

__all__ = [
    "AUDIENCES", "BALANCE_DIMENSIONS", "BUNDLED_MODEL", "CPU_GENERATE_POOL", "CPU_THREADS_ENV", "DEFAULT_MAX_MAP_LENGTH",
    "DEFAULT_TOPIC_DENY", "FORMATS", "GATE_COLUMNS", "GPU_GENERATE_POOL", "LANGUAGES",
    "REASONS", "STORAGE_ENV", "WORD_QUANTILES", "Audience", "Bounds", "CorpusSpec", "DecontamReference",
    "DecontamSpec", "Format", "GenerationSpec", "HeuristicsSpec", "KubernetesSpec", "Language", "NearDedupSpec",
    "OpenAISpec", "PromptsSpec", "PublishSpec", "QualitySpec", "RefreshSpec", "SampleClean", "SampleSource", "SeedsSpec", "JudgeSpec", "JudgeGateSpec", "SpecError",
    "SpecProblem", "StorageSpec", "TasksSpec", "TopicsSpec", "UserExpectation", "VLLMSpec", "discover", "gate_columns",
    "load_spec", "parse_spec",
]
