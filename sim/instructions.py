"""Training phrasings and held-out instruction sets for the 50 tasks.

Pure data: importing this module loads neither MuJoCo nor torch.

Generator (deterministic, no randomness). Each task has a small table (`_TABLES`):
  verbs   verb phrases with an `{o}` slot for the object ("pull {o} open"),
  objects object names / synonyms ("the drawer", "the sliding drawer"),
  where   optional location suffixes appended to every sentence (" behind the wall").
A *core* is one verb x object x where combination, ordered diagonally so that consecutive
cores differ. Sentence k of a task applies training template (k + k // n_cores) % n_templates
to core k % n_cores (plain imperative, "please ...", "kindly ...", terse "drawer: open", ...).
The task's `TaskSpec.instruction` comes first; duplicates and any core equal to one of the
task's held-out sentences are dropped; the list stops at `MAX_TRAINING` phrasings.

Held-out sets (`HELDOUT_SETS`), never used for training:
  paraphrase  `TaskSpec.paraphrases`, hand-written.
  question    polite questions ("could you ...?", "would you mind ...ing ...?") and longer
              sentences with a distractor clause, built from the same tables with templates
              the training set never uses.
Training and both held-out sets are disjoint (case- and whitespace-insensitive).
"""

from __future__ import annotations

from functools import cache
from itertools import product

from sim.errors import InputError
from sim.tasks import TASKS, get_task

HELDOUT_SETS = ("paraphrase", "question")
INSTRUCTION_SETS = ("train", *HELDOUT_SETS)  # what an evaluation may use: the training instruction or a held-out set
MAX_TRAINING = 48  # training phrasings per task, at most

# task -> (verbs, objects, where); "|" separates alternatives, "" in where means "no suffix"
_WALL = " behind the wall| past the wall| on the other side of the wall"
_TABLES: dict[str, tuple[str, str, str]] = {
    "assembly": ("put {o} on the peg|place {o} on the peg|fit {o} over the peg|drop {o} onto the peg|"
                 "thread {o} onto the peg|lower {o} over the peg", "the ring|the nut|the round nut|the washer", ""),
    "basketball": ("dunk {o}|put {o} in the basket|drop {o} into the basket|throw {o} into the hoop|"
                   "shoot {o} into the basket|sink {o} through the hoop",
                   "the ball|the basketball|the orange ball", ""),
    "bin-picking": ("move {o} into the other bin|put {o} in the second bin|carry {o} to the other bin|"
                    "transfer {o} into the empty bin|relocate {o} to the other bin|lift {o} over to the other bin",
                    "the cube|the block|the small block", ""),
    "box-close": ("put {o} on the box|place {o} onto the box|close the box with {o}|cover the box with {o}|"
                  "set {o} on top of the box|fit {o} onto the box", "the lid|the box lid|the top", ""),
    "button-press-topdown": ("press {o} from the top|push {o} down from above|press down on {o}|"
                             "tap {o} from above|push down on {o} from the top|hit {o} from the top",
                             "the button|the push button|the switch", ""),
    "button-press-topdown-wall": ("press {o} from the top|push {o} down from above|press down on {o}|"
                                  "tap {o} from above|push down on {o} from the top|hit {o} from the top",
                                  "the button|the push button|the switch", _WALL),
    "button-press": ("press {o}|push {o} in|press {o} forward|push {o} forward|hit {o}|poke {o}",
                     "the button|the push button|the switch", ""),
    "button-press-wall": ("press {o}|push {o} in|press {o} forward|push {o} forward|hit {o}|poke {o}",
                          "the button|the push button|the switch", _WALL),
    "coffee-button": ("press {o}|push {o}|hit {o}|tap {o}|push in {o}",
                      "the button on the coffee machine|the coffee machine's button|the coffee maker button|"
                      "the button of the espresso machine", ""),
    "coffee-pull": ("pull {o} out of the coffee machine|drag {o} away from the coffee machine|"
                    "slide {o} out from under the machine|take {o} out of the coffee maker|"
                    "draw {o} back from the coffee machine", "the mug|the cup|the coffee mug", ""),
    "coffee-push": ("push {o} under the coffee machine|slide {o} beneath the coffee machine|nudge {o} under the spout|"
                    "shove {o} under the coffee maker|move {o} into place under the coffee machine",
                    "the mug|the cup|the coffee mug", ""),
    "dial-turn": ("turn {o}|rotate {o}|twist {o}|spin {o}|rotate {o} around|give {o} a turn",
                  "the dial|the knob|the round dial", ""),
    "disassemble": ("take {o} off the peg|lift {o} off the peg|remove {o} from the peg|pull {o} off the peg|"
                    "pick {o} up off the peg|unmount {o} from the peg",
                    "the ring|the nut|the round nut|the washer", ""),
    "door-close": ("close {o}|shut {o}|swing {o} closed|push {o} closed|push {o} shut|swing {o} shut",
                   "the door|the cabinet door|the hinged door", ""),
    "door-lock": ("lock {o}|secure {o}|bolt {o}|rotate the lock on {o} downward|twist the lock of {o} shut|"
                  "flip the latch of {o} down", "the door|the cabinet door|the safe door", ""),
    "door-open": ("open {o}|pull {o} open|swing {o} open|open up {o}|pull {o} wide open|swing open {o}",
                  "the door|the cabinet door|the hinged door", ""),
    "door-unlock": ("unlock {o}|unbolt {o}|release the lock on {o}|rotate the lock on {o} upward|"
                    "twist the lock of {o} open|flip the latch of {o} up",
                    "the door|the cabinet door|the safe door", ""),
    "drawer-close": ("close {o}|shut {o}|push {o} closed|slide {o} in|push {o} in|slide {o} shut",
                     "the drawer|the open drawer|the desk drawer", ""),
    "drawer-open": ("open {o}|pull {o} open|slide {o} out|pull out {o}|draw {o} out|pull {o} towards you",
                    "the drawer|the closed drawer|the desk drawer", ""),
    "faucet-close": ("turn {o} off|shut {o} off|close {o}|rotate {o} closed|twist {o} off|turn off {o}",
                     "the faucet|the tap|the faucet handle", ""),
    "faucet-open": ("turn {o} on|open {o}|rotate {o} open|twist {o} on|turn on {o}|switch on {o}",
                    "the faucet|the tap|the faucet handle", ""),
    "hammer": ("hammer {o} into the wall|drive {o} in with the hammer|use the hammer to knock {o} in|"
               "pound {o} in with the hammer|hit {o} with the hammer|strike {o} using the hammer",
               "the nail|the metal nail|the protruding nail", ""),
    "hand-insert": ("put your hand into {o}|insert the gripper into {o}|reach down into {o}|place the hand in {o}|"
                    "lower the gripper into {o}|move the gripper down into {o}",
                    "the hole|the opening|the hole in the table", ""),
    "handle-press-side": ("press {o} down from the side|push {o} down from the side|press down on {o} from the side|"
                          "lower {o} from the side|push down on {o} from its side|press {o} down sideways",
                          "the handle|the grip|the handle bar", ""),
    "handle-press": ("press {o} down|push {o} down|press down on {o}|lower {o}|push down on {o}|"
                     "press {o} all the way down", "the handle|the grip|the handle bar", ""),
    "handle-pull-side": ("pull {o} up from the side|lift {o} from the side|raise {o} from its side|"
                         "pull up on {o} from the side|draw {o} upward from the side|lift {o} up sideways",
                         "the handle|the grip|the handle bar", ""),
    "handle-pull": ("pull {o} up|lift {o}|raise {o}|pull up on {o}|draw {o} upward|lift {o} all the way up",
                    "the handle|the grip|the handle bar", ""),
    "lever-pull": ("pull {o} up|lift {o}|raise {o}|flip {o} upward|pull {o} upward|swing {o} up",
                   "the lever|the lever arm|the switch lever", ""),
    "peg-insert-side": ("insert {o} into the hole from the side|push {o} sideways into the hole|"
                        "slide {o} into the side hole|put {o} in the hole on the side|fit {o} into the hole sideways|"
                        "stick {o} into the side opening", "the peg|the pin|the small peg", ""),
    "peg-unplug-side": ("unplug {o} from the side|pull {o} out sideways|remove {o} from the side hole|"
                        "slide {o} out of its socket|pull {o} out of the side hole|extract {o} sideways",
                        "the peg|the pin|the plug", ""),
    "pick-out-of-hole": ("pick {o} out of the hole|lift {o} out of the hole|take {o} from the hole|"
                         "pull {o} up out of the hole|remove {o} from the hole|grab {o} out of the hole",
                         "the peg|the pin|the small peg", ""),
    "pick-place": ("pick up {o} and place it at the goal|grab {o} and put it on the target|"
                   "lift {o} and set it at the goal|carry {o} to the goal|pick {o} up and move it to the target|"
                   "move {o} through the air to the goal", "the puck|the disc|the hockey puck", ""),
    "pick-place-wall": ("pick up {o} and place it at the goal|grab {o} and put it on the target|"
                        "lift {o} and set it at the goal|carry {o} to the goal|pick {o} up and move it to the target|"
                        "move {o} through the air to the goal", "the puck|the disc|the hockey puck", _WALL),
    "plate-slide-back-side": ("slide {o} back out of the cabinet sideways|pull {o} out of the cabinet to the side|"
                              "take {o} out of the cabinet sideways|draw {o} out of the cabinet sideways|"
                              "drag {o} sideways out of the cabinet|get {o} out of the cabinet from the side",
                              "the plate|the dish|the flat plate", ""),
    "plate-slide-back": ("slide {o} back out of the cabinet|pull {o} out of the cabinet|take {o} out of the cabinet|"
                         "draw {o} out of the cabinet|drag {o} back out of the cabinet|retrieve {o} from the cabinet",
                         "the plate|the dish|the flat plate", ""),
    "plate-slide-side": ("slide {o} into the cabinet sideways|push {o} sideways into the cabinet|"
                         "slide {o} to the side target|move {o} into the cabinet from the side|"
                         "shove {o} into the cabinet from the side|glide {o} sideways into the cabinet",
                         "the plate|the dish|the flat plate", ""),
    "plate-slide": ("slide {o} into the cabinet|push {o} into the cabinet|slide {o} forward to the target|"
                    "move {o} into the cabinet|shove {o} into the cabinet|glide {o} forward into the cabinet",
                    "the plate|the dish|the flat plate", ""),
    "push-back": ("push {o} backwards to the goal|slide {o} back toward the target|push {o} toward yourself|"
                  "move {o} back to the goal|nudge {o} backward to the target|drag {o} back to the goal",
                  "the puck|the disc|the hockey puck", ""),
    "push": ("push {o} to the goal|slide {o} to the target|move {o} along the table to the goal|"
             "shove {o} onto the target|nudge {o} to the goal|slide {o} across the table to the target",
             "the puck|the disc|the hockey puck", ""),
    "push-wall": ("push {o} to the goal|slide {o} to the target|move {o} to the goal|shove {o} toward the target|"
                  "nudge {o} to the goal", "the puck|the disc|the hockey puck", _WALL),
    "reach": ("reach to {o}|move the gripper to {o}|touch {o}|put the hand at {o}|go to {o}|bring the gripper to {o}",
              "the goal|the target|the goal position|the target point", ""),
    "reach-wall": ("reach to {o}|move the gripper to {o}|touch {o}|put the hand at {o}|go to {o}|"
                   "bring the gripper to {o}", "the goal|the target|the goal position", _WALL),
    "shelf-place": ("put {o} on the shelf|place {o} onto the shelf|lift {o} up to the shelf|set {o} on the shelf|"
                    "move {o} onto the shelf|raise {o} onto the shelf", "the block|the cube|the small block", ""),
    "soccer": ("kick {o} into the goal|push {o} into the net|score a goal with {o}|shoot {o} into the goal|"
               "roll {o} into the goal|knock {o} into the net", "the ball|the soccer ball|the football", ""),
    "stick-pull": ("use the stick to pull {o}|grab the stick and drag {o}|pull {o} with the stick|"
                   "hook {o} with the stick and pull it|drag {o} back using the stick|"
                   "pick up the stick and pull {o} toward you", "the bottle|the thermos|the container", ""),
    "stick-push": ("use the stick to push {o}|grab the stick and shove {o}|push {o} away with the stick|"
                   "move {o} forward using the stick|pick up the stick and push {o}|nudge {o} forward with the stick",
                   "the bottle|the thermos|the container", ""),
    "sweep-into": ("sweep {o} into the hole|push {o} into the hole|slide {o} into the opening|sweep {o} into the goal|"
                   "brush {o} into the hole|shove {o} into the hole", "the cube|the block|the small cube", ""),
    "sweep": ("sweep {o} off the table|push {o} off the edge|slide {o} off the side of the table|"
              "brush {o} off the table|knock {o} off the table|shove {o} over the edge of the table",
              "the cube|the block|the small cube", ""),
    "window-close": ("close {o}|slide {o} shut|push {o} closed|shut {o}|slide {o} closed|push {o} shut",
                     "the window|the glass window|the open window", ""),
    "window-open": ("open {o}|slide {o} open|push {o} open|open up {o}|slide open {o}|push open {o}",
                    "the window|the glass window|the closed window", ""),
}

# training templates: {s} = the sentence, {t} = its terse form ("drawer: pull open")
_TRAIN_TEMPLATES = (
    "{s}", "please {s}", "{t}", "{s}, please", "kindly {s}", "{s} now", "go ahead and {s}",
    "your task is to {s}", "{s} carefully", "now {s}", "task: {s}", "I want you to {s}", "{s} for me",
    "your job is to {s}", "{s}, then stop",
)
# held-out question-set templates (never used for training); a distractor clause is filled per task
_DISTRACTORS = (
    "the table is a bit cluttered", "there are a few other objects lying around",
    "the lighting is a little dim today", "the camera is slightly off to one side",
    "things may look a little different than usual",
)
_ASIDES = (
    "ignore everything else on the table and just {s}", "don't worry about the rest of the scene; just {s}",
    "when you get a chance, {s}", "take your time, there is no rush, and {s}",
)
_PARTICLES = {"up", "down", "out", "in", "on", "off", "open"}
_DOUBLED = {"put", "fit", "drop", "set", "tap", "hit", "drag", "spin", "shut", "flip", "grab", "get", "unplug"}


def _split(field: str) -> list[str]:
    return field.split("|") if field else [""]


def _key(text: str) -> str:
    """Comparison key: case- and whitespace-insensitive."""
    return " ".join(text.lower().split())


def _ing(verb: str) -> str:
    if verb in _DOUBLED:
        return verb + verb[-1] + "ing"
    if verb.endswith("e") and not verb.endswith("ee"):
        return verb[:-1] + "ing"
    return verb + "ing"


def _gerund(sentence: str) -> str:
    """'grab the stick and drag the bottle' -> 'grabbing the stick and dragging the bottle'."""
    words = sentence.split()
    return " ".join(_ing(w) if i == 0 or words[i - 1] == "and" else w for i, w in enumerate(words))


def _noun(obj: str) -> str:
    for article in ("the ", "your "):
        if obj.startswith(article):
            return obj[len(article):]
    return obj


def _terse_verb(verb: str) -> str:
    """'pull {o} open' -> 'pull open' for terse commands; '' when that would read badly."""
    before, _, after = verb.partition("{o}")
    words = before.split()
    if len(words) > 2 or (len(words) == 2 and words[1] not in _PARTICLES) or after.startswith(" a "):
        return ""
    return " ".join(before.split() + after.split())


@cache
def _cores(task: str) -> tuple[tuple[str, str], ...]:
    """(sentence, terse form) per verb x object x where, diagonally ordered so neighbours differ."""
    verbs, objects, wheres = (_split(f) for f in _TABLES[task])
    idx = sorted(product(range(len(verbs)), range(len(objects)), range(len(wheres))), key=lambda t: (sum(t), t))
    out = []
    for i, j, k in idx:
        v, o, w = verbs[i], objects[j], wheres[k]
        sentence = v.format(o=o) + w
        terse = f"{_noun(o)}: {_terse_verb(v)}{w}" if _terse_verb(v) else f"{sentence}, thanks"
        out.append((sentence, terse))
    return tuple(out)


def _heldout_keys(task: str) -> set[str]:
    return {_key(s) for name in HELDOUT_SETS for s in heldout_phrasings(task, name)}


def _task(task: str) -> str:
    return get_task(task).name  # canonical name; raises a clear InputError for unknown tasks


@cache
def training_phrasings(task: str) -> tuple[str, ...]:
    """The task's training phrasings: its `TaskSpec.instruction` first, then generated variants."""
    name = _task(task)
    banned = _heldout_keys(name)
    cores = [c for c in _cores(name[:-3]) if _key(c[0]) not in banned]
    out: dict[str, str] = {_key(TASKS[name].instruction): TASKS[name].instruction}
    n, t = len(cores), len(_TRAIN_TEMPLATES)
    for k in range(n * t):
        if len(out) >= MAX_TRAINING:
            break
        s, terse = cores[k % n]
        text = _TRAIN_TEMPLATES[(k + k // n) % t].format(s=s, t=terse)
        if _key(text) not in banned:
            out.setdefault(_key(text), text)
    return tuple(out.values())


def check_instruction_set(name: str) -> str:
    """`name` if it is one of `INSTRUCTION_SETS`, else a clear InputError."""
    if name not in INSTRUCTION_SETS:
        raise InputError(f"instruction set must be one of {', '.join(INSTRUCTION_SETS)}, got {name!r}")
    return name


@cache
def _questions(task: str) -> tuple[str, ...]:
    short = task[:-3]
    cores = _cores(short)
    i = sorted(_TABLES).index(short)  # spreads distractor clauses over the tasks
    step = len(cores) // 4 + 1
    pick = [cores[(i + step * j) % len(cores)][0] for j in range(4)]
    return (
        f"could you {pick[0]}?",
        f"would you mind {_gerund(pick[1])}?",
        f"{_DISTRACTORS[i % len(_DISTRACTORS)]}, but please {pick[2]}",
        _ASIDES[i % len(_ASIDES)].format(s=pick[3]),
    )


def heldout_phrasings(task: str, name: str) -> tuple[str, ...]:
    """A held-out set: "paraphrase" (TaskSpec.paraphrases) or "question" (questions, distractor clauses)."""
    if name not in HELDOUT_SETS:
        raise InputError(f"unknown held-out instruction set {name!r} (choose from {', '.join(HELDOUT_SETS)})")
    task = _task(task)
    return TASKS[task].paraphrases if name == "paraphrase" else _questions(task)


def all_known(task: str) -> tuple[str, ...]:
    """Training phrasings plus both held-out sets (for caching embeddings)."""
    out = training_phrasings(task)
    for name in HELDOUT_SETS:
        out += heldout_phrasings(task, name)
    return tuple(dict.fromkeys(out))
