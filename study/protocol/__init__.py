"""The study file: one pydantic schema holding every setting, its default and its help text.

`validate_study_file` reports every problem at once, each with the setting's path and a plain
sentence; `load_study` returns a `Study` or raises `UserError` carrying those problems.
`settings_reference()` walks the schema; docs/study_file.md is generated from it.

The package: schema.py (the pydantic models, Study and its sections), checks.py (checks across
settings and against the manifest), wording.py (pydantic errors as plain messages), loading.py
(reading the YAML, validate_study_file, load_study, cli_validate), docs.py (the settings
reference, docs/study_file.md, cli_codebook); `python -m study.protocol` runs __main__.py.
"""

from study.protocol.checks import (  # noqa: F401
    _design_problems,
    _measured_per_clip,
    cross_check,
    design_warnings,
    manifest_problems,
)
from study.protocol.docs import (  # noqa: F401
    DOC_END,
    DOC_START,
    _constraints,
    _default_text,
    _type_name,
    cli_codebook,
    settings_markdown,
    settings_reference,
    update_settings_doc,
)
from study.protocol.loading import (  # noqa: F401
    ManifestLoader,
    _construct_mapping,
    _dedupe,
    _default_manifest_loader,
    _parse,
    _read_yaml,
    _UniqueKeyLoader,
    _validate,
    _validated_sections,
    cli_validate,
    load_study,
    validate_study_file,
)
from study.protocol.schema import (  # noqa: F401
    SLUG,
    AnalysisPlan,
    AttentionCheck,
    Completion,
    Consent,
    ContinuousRating,
    CustomItem,
    Design,
    Exclusions,
    InstrumentChoice,
    Measures,
    Playback,
    StimuliSettings,
    Study,
    _https,
    _Section,
    slugify,
    study_hash,
)
from study.protocol.wording import (  # noqa: F401
    _adapter,
    _inner_model,
    _list_model,
    _model_at,
    _path,
    _plain,
    _valid_or_none,
)
