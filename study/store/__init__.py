"""The database: tables, engine, migrations, and the only functions that write.

Everything a participant gives goes through one of the functions below, each in one short
transaction. Readers (analysis/load.py, the dashboard) may SELECT from these tables directly;
the table and column names are part of the contract and change only through a migration.

Tables (all times UTC):

- ``studies``: one row per study id. ``spec_yaml`` is the exact study file as registered,
  ``spec_hash`` its sha256, ``manifest`` the manifest rows as JSON; ``status`` is
  open | paused | closed. It describes the newest version, the one new participants get.
- ``study_versions``: (study_id, version) -> that version's frozen ``spec_yaml``, ``spec_hash``,
  ``manifest`` and ``stimuli_dir``, kept for good: each participant is served the version in
  their ``study_version``.
- ``stimuli``: (study_id, stimulus_id) with source (human | ai), pair_id, sha256, duration and
  provenance (credit, licence, generator, version, prompt, seed, notes) as JSON.
- ``participants``: ``token`` (secret, in the participant's URL), ``pseudonym`` (P0001 ..., the
  only id in exports), Prolific ids, ``label_condition``, ``list_index``, ``participant_number``
  (1, 2, ... in enrolment order), ``status`` (see STATUSES), ``step_index``/``step_key`` (where
  they are in study.flow's step list), ``attention_failed`` (count), ``excluded_reason``.
- ``planned_trials``: the assigned clip sequence; position 0 is the practice clip
  (kind practice), positions 1..n the main clips (kind main).
- ``trials``: one row per clip actually shown (position as in planned_trials): when it started,
  when its ratings were submitted, ``watched_share`` (0..1, the max reported), ``max_time``,
  ``item_order`` (item ids in the order shown), and how the clip was seen and heard, computed
  from its playback events at submit (store.metrics, study/playback.py): ``play_count``,
  ``replayed``, ``skipped``, ``seconds_hidden``, ``share_muted``, ``seconds_stalled``,
  ``load_ms``, ``seconds_offline``.
- ``responses``: one row per answered item. ``step_key`` is the flow step: ``trial:<pos>`` for
  clip ratings, ``practice``, ``mood_pre``, ``mood_post``, ``demographics``, ``consent``,
  ``attention:<id>``. Unique (participant_id, step_key, item_id). ``value_num`` holds numbers,
  ``value_text`` text and choices; ``untouched`` marks a slider left at its start (value null).
- ``playback_events`` and ``continuous_samples``: what the player reported, unique by
  (participant_id, position, seq) so a resent batch is stored once (continuous_samples holds
  only data recorded before migration 0008).
- ``trace_batches``: continuous-rating traces and moment marks, one row per batch the player
  sent (video times ``t``, values ``x``/``y`` and ``marks`` as JSON arrays), unique by
  (participant_id, position, attempt, seq); ``attempt`` changes when a reload restarts the clip.
- ``audit_log``: researcher and system actions; ``actor`` is the researcher's username (or
  "researcher" in single-password mode, "cli", "system", "participant"); ``participant_ref`` is a
  hash of the pseudonym, never a raw id.
- ``researchers``: one row per researcher account (username, argon2id ``password_hash``, role
  owner | editor | viewer, ``locked``, ``failed_logins``); ``researcher_study_access``: which
  studies an editor or viewer may see (see researchers.py).
- ``followup_links`` (a personal follow-up token per anonymous participant, shown at the end of
  session 1), ``followup_sessions`` (one row per participant and follow-up: session_number 2, 3 ...,
  the actual ``delay_hours`` since session 1 was completed, ``late``, the recognition
  ``still_order``) and ``followup_answers`` (one row per answered item, unique by session, step and
  item): written only by followups.py (migration 0009).

The package: tables.py (schema), engine.py (engines, transactions, migrations, backups),
studies.py (audit, studies, versions), sessions.py (participants and pages), events.py
(player events), metrics.py (a trial's playback columns), traces.py (traces and marks), privacy.py
(withdrawal, timeouts, deletion), preview.py (a researcher's preview,
built in memory and never stored), researchers.py (accounts, login, permissions), server.py (the web server's reads).
"""

from study.store.engine import (  # noqa: F401
    PG_DUMP_GUIDANCE,
    PG_MAX_OVERFLOW,
    PG_POOL_SIZE,
    Backup,
    _alembic_config,
    _is_pg,
    _pg_backup,
    _read,
    _safe_url,
    _sqlite_backup,
    _write,
    backup,
    check_connection_budget,
    cli_db,
    current_revision,
    head_revision,
    make_engine,
    normalise_url,
    upgrade,
)
from study.store.traces import (  # noqa: F401
    MAX_BATCHES_PER_REQUEST,
    MAX_SAMPLES_PER_BATCH,
    CaptureSpec,
    TracesOutcome,
    capture_spec,
    record_trace_batch,
    record_trace_requests,
    record_traces,
)
from study.store.events import (  # noqa: F401
    _SAFE_INT,
    EVENT_TYPES,
    MAX_DETAIL_CHARS,
    MAX_DETAIL_DEPTH,
    MAX_EVENTS_PER_BATCH,
    SAMPLE_EVENT,
    EventsOutcome,
    RefusedValue,
    _event_problem,
    bad_text,
    record_event_batch,
    record_event_requests,
    record_events,
    unsafe_json,
)
from study.store.privacy import (  # noqa: F401
    cli_delete_participant,
    delete_participant,
    mark_timed_out,
    withdraw,
)
from study.store.researchers import (  # noqa: F401
    LOGIN_FAILED_MESSAGE,
    MAX_FAILED_LOGINS,
    MIN_PASSWORD_CHARS,
    SHARED,
    Forbidden,
    LoginResult,
    Researcher,
    add_researcher,
    allowed,
    authorize,
    cli_researcher,
    current_researcher,
    delete_researcher,
    grant,
    grant_if_new,
    has_accounts,
    list_researchers,
    login,
    set_locked,
    visible_studies,
)
from study.store.server import (  # noqa: F401
    _ENGINES,
    _ENGINES_LOCK,
    mark_all_timed_out,
    shared_engine,
    stimulus_captions,
    stimulus_file,
)
from study.store.preview import (  # noqa: F401
    PREVIEW_PREFIX,
    PreviewPlan,
    is_preview_token,
    new_preview_token,
    preview_plan,
    preview_state,
    preview_submit,
)
from study.store.sessions import (  # noqa: F401
    NOT_READ,
    _LOAD,
    _LOAD_FOR_UPDATE,
    _P_COLUMNS,
    _PLANNED,
    _PLANNED_CACHE,
    _S_COLUMNS,
    _UPSERT_TRIAL,
    _V,
    CLOSED_MESSAGE,
    INACTIVE_MESSAGES,
    INVALID_LINK_MESSAGE,
    ParticipantState,
    SubmitResult,
    _balance_counts,
    _build_state,
    _ctx_key,
    _dialect_insert,
    _greatest,
    _insert_ignore,
    _load,
    _planned,
    _stored_answers,
    _upsert_trial,
    _upsert_trial_stmt,
    enrol,
    get_state,
    set_language,
    stored_watched_share,
    study_language,
    submit_step,
)
from study.store.studies import (  # noqa: F401
    _CACHE_LOCK,
    _CACHE_MAX,
    _CONTEXTS,
    _STEPS,
    StudyClosed,
    StudyInfo,
    _audit,
    _Context,
    _context,
    _parse_spec,
    _steps,
    _stimulus_rows,
    _study_row,
    _versions,
    audit,
    cli_study,
    get_study,
    list_studies,
    list_versions,
    participant_ref,
    register_study,
    resolve_study_id,
    set_study_status,
    study_status,
)
from study.errors import Problem, UserError  # noqa: F401  (part of the store's API since it was one module)
from study.store.tables import (  # noqa: F401
    ACTIVE_STATUSES,
    MIGRATIONS_DIR,
    STATUSES,
    STUDY_STATUSES,
    TS,
    AuditRow,
    Base,
    ContinuousSampleRow,
    ParticipantRow,
    PlannedTrialRow,
    PlaybackEventRow,
    RESEARCHER_ROLES,
    ResearcherAccessRow,
    ResearcherRow,
    ResponseRow,
    StimulusRow,
    StudyRow,
    StudyVersionRow,
    TraceBatchRow,
    TrialRow,
    audit_log,
    continuous_samples,
    followup_answers,
    followup_links,
    followup_sessions,
    trace_batches,
    participants,
    planned_trials,
    playback_events,
    researcher_study_access,
    researchers,
    responses,
    stimuli,
    studies,
    study_versions,
    trials,
    utcnow,
)
