"""NATS JetStream names: streams, subjects and durable consumers (constants only).

Subjects are `fnas.<producer>.<event>` (STYLE.md §4). Two streams:

- JOBS, a work-queue stream of TrainJob messages: one shared durable consumer
  (`trainer`) that every trainer pulls from, so each job goes to one trainer.
- EVENTS, a limits stream of TrainResult and progress events per search, read
  by one durable consumer per consuming service, so that a restarted service
  resumes where it stopped.
"""

from __future__ import annotations

from fnas.v1 import search_pb2

# --- streams ---------------------------------------------------------------------------------------------

#: Work-queue stream of TrainJob (retention WORK_QUEUE: a message leaves once acked).
JOBS = "JOBS"
#: Limits stream of results and events, replayable by every durable consumer.
EVENTS = "EVENTS"

# --- subjects --------------------------------------------------------------------------------------------

#: TrainJob, published by the agent; message id is the job id.
TRAIN_JOB = "fnas.agent.train_job"
#: Prefix of TrainResult subjects; one subject per search: fnas.trainer.result.<search_id>.
TRAIN_RESULT_PREFIX = "fnas.trainer.result"
#: Prefix of search progress events: fnas.agent.event.<search_id>.<kind>, kind the SearchEvent's
#: `kind` (sample, update, finished), so that a service that needs only ends hears only of ends;
#: fnas.agent.event.<search_id>.* is one search's events in order.
SEARCH_EVENT_PREFIX = "fnas.agent.event"
#: Prefix of trainer failure notices: fnas.trainer.failed.<search_id>.
TRAIN_FAILED_PREFIX = "fnas.trainer.failed"

JOBS_SUBJECTS = (TRAIN_JOB,)
EVENTS_SUBJECTS = (f"{TRAIN_RESULT_PREFIX}.>", f"{SEARCH_EVENT_PREFIX}.>", f"{TRAIN_FAILED_PREFIX}.>")

#: Every TrainResult of every search (a consumer filter).
ALL_TRAIN_RESULTS = f"{TRAIN_RESULT_PREFIX}.>"
#: Every search event of every search (a consumer filter).
ALL_SEARCH_EVENTS = f"{SEARCH_EVENT_PREFIX}.>"
#: The `finished` event of every search (a consumer filter): what the trainers, critic and buffer need.
SEARCH_ENDS = f"{SEARCH_EVENT_PREFIX}.*.finished"


def train_result(search_id: str) -> str:
    """Subject of the TrainResults of one search."""
    return f"{TRAIN_RESULT_PREFIX}.{_token(search_id)}"


#: The kinds of search event, each a subject token: the fields of SearchEvent's `kind` oneof.
SEARCH_EVENT_KINDS = tuple(f.name for f in search_pb2.SearchEvent.DESCRIPTOR.oneofs_by_name["kind"].fields)


def search_event(search_id: str, kind: str) -> str:
    """Subject of one kind of progress event of one search."""
    if kind not in SEARCH_EVENT_KINDS:
        raise ValueError(f"search event kind {kind!r} is not one of {SEARCH_EVENT_KINDS}")
    return f"{SEARCH_EVENT_PREFIX}.{_token(search_id)}.{kind}"


def train_failed(search_id: str) -> str:
    """Subject of the trainer failure notices of one search."""
    return f"{TRAIN_FAILED_PREFIX}.{_token(search_id)}"


def result_msg_id(job_id: str) -> str:
    """Nats-Msg-Id of the TrainResult of a job: every trainer uses it, so JetStream keeps one."""
    return f"result/{job_id}"


#: Longest search id any service accepts (the agent makes 12 hex characters; ids key LMDB records).
MAX_SEARCH_ID_CHARS = 64


def search_id_problem(search_id: str) -> str | None:
    """Why `search_id` cannot be a search id ('' is left to the caller: some requests omit it), or None.

    A search id becomes a NATS subject token and the prefix of "<search_id>/<index>" store keys, so
    it must be short, without '/', '.', wildcards, whitespace or control characters.
    """
    if len(search_id) > MAX_SEARCH_ID_CHARS:
        return f"longer than {MAX_SEARCH_ID_CHARS} characters"
    if any(c in "/.*>" or not c.isprintable() or c.isspace() for c in search_id):
        return "may not contain '/', '.', '*', '>', spaces or control characters"
    return None


def _token(search_id: str) -> str:
    # A search id becomes one subject token: "." would split it, wildcards and spaces would be rejected.
    if not search_id or any(c in search_id for c in ".*> \t\r\n"):
        raise ValueError(f"search id {search_id!r} cannot be a NATS subject token")
    return search_id


# --- durable consumers (named after the service that consumes) --------------------------------------------

#: The one consumer of JOBS, shared by all trainers (a work queue allows one per subject filter).
TRAINER = "trainer"
#: Consumers of EVENTS.
AGENT = "agent"
CRITIC = "critic"
BUFFER = "buffer"


def search_ends_consumer(service: str) -> str:
    """The durable consumer of SEARCH_ENDS of a service that must hear of every end, those while it was
    down included (the critic and buffer free an ended search's memory)."""
    return f"{service}-ends"


# --- advisories --------------------------------------------------------------------------------------------

#: Core-NATS subject announcing a message whose deliveries ran out (format with stream, consumer).
MAX_DELIVERIES_ADVISORY = "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}"


def max_deliveries_advisory(stream: str = JOBS, consumer: str = TRAINER) -> str:
    """The max-deliveries advisory subject of one consumer."""
    return MAX_DELIVERIES_ADVISORY.format(stream=stream, consumer=consumer)
