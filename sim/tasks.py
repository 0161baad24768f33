"""The 50 MetaWorld v3 tasks: language instructions, held-out paraphrases and reset-vector layout.

Pure data: importing this module loads neither MuJoCo nor torch, so the API can validate task names.

`obj_xy` / `goal_xy` are the indices of the x and y entries of the task's reset vector (`rand_vec`)
that place the main object and an independent goal. `None` means the task has no such entity in
its reset vector (for example a drawer whose goal moves with the drawer), so the matching
perturbation does not apply. The layout was measured by moving each entry and reading
`_get_pos_objects()` and `_target_pos` back; `tests/test_perturb.py` re-checks it.
"""

from __future__ import annotations

from dataclasses import dataclass

from sim.errors import InputError


@dataclass(frozen=True)
class TaskSpec:
    name: str
    instruction: str
    paraphrases: tuple[str, ...]  # held out from training, for language generalisation
    skill: str
    obj_xy: tuple[int, int] | None = (0, 1)
    goal_xy: tuple[int, int] | None = None

    @property
    def all_instructions(self) -> tuple[str, ...]:
        return (self.instruction, *self.paraphrases)


_G = (3, 4)  # independent goal in entries 3, 4 of a 6-entry reset vector


def _t(name: str, skill: str, instruction: str, *paraphrases: str, obj=(0, 1), goal=None) -> TaskSpec:
    return TaskSpec(f"{name}-v3", instruction, tuple(paraphrases), skill, obj, goal)


_ALL: list[TaskSpec] = [
    _t("assembly", "pick-place", "put the ring on the peg",
       "slide the ring over the peg", "assemble the ring onto the peg", "place the nut around the peg", goal=_G),
    _t("basketball", "pick-place", "dunk the ball into the basket",
       "put the ball in the hoop", "score a basket with the ball", "drop the ball through the hoop", goal=_G),
    _t("bin-picking", "pick-place", "move the cube into the other bin",
       "transfer the block to the second bin", "pick the cube out and drop it in the other bin",
       "carry the block across to the empty bin"),
    _t("box-close", "pick-place", "put the lid on the box",
       "close the box with its lid", "cover the box", "place the lid onto the box", goal=_G),
    _t("button-press-topdown", "press", "press the button from the top",
       "push the button down", "press down on the button", "hit the button from above"),
    _t("button-press-topdown-wall", "press", "press the button from the top behind the wall",
       "push the button down past the wall", "reach over the wall and press the button down",
       "press down on the button behind the wall"),
    _t("button-press", "press", "press the button",
       "push the button in", "press the button forward", "hit the button on the front"),
    _t("button-press-wall", "press", "press the button behind the wall",
       "push the button in past the wall", "reach around the wall and press the button",
       "press the button hidden behind the wall"),
    _t("coffee-button", "press", "press the button on the coffee machine",
       "start the coffee machine", "push the coffee maker's button", "turn on the coffee machine"),
    _t("coffee-pull", "push", "pull the mug out of the coffee machine",
       "take the cup away from the coffee maker", "slide the mug out from the machine",
       "drag the mug to the target", goal=_G),
    _t("coffee-push", "push", "push the mug under the coffee machine",
       "slide the cup into the coffee maker", "move the mug under the spout",
       "shove the mug into the coffee machine", goal=_G),
    _t("dial-turn", "rotate", "turn the dial",
       "rotate the knob", "spin the dial around", "twist the dial"),
    _t("disassemble", "pick-place", "take the ring off the peg",
       "lift the ring off the peg", "remove the nut from the peg", "pull the ring up and off the peg"),
    _t("door-close", "articulated", "close the door",
       "shut the door", "swing the door closed", "push the door shut"),
    _t("door-lock", "rotate", "lock the door",
       "turn the lock on the door", "rotate the door's lock down", "secure the door lock"),
    _t("door-open", "articulated", "open the door",
       "pull the door open", "swing the door open", "open up the door"),
    _t("door-unlock", "rotate", "unlock the door",
       "turn the door's lock open", "rotate the lock to unlock the door", "release the door lock"),
    _t("drawer-close", "articulated", "close the drawer",
       "push the drawer shut", "slide the drawer closed", "shut the drawer"),
    _t("drawer-open", "articulated", "open the drawer",
       "pull the drawer open", "slide the drawer out", "pull out the drawer"),
    _t("faucet-close", "rotate", "turn the faucet off",
       "close the tap", "rotate the faucet handle closed", "shut off the faucet"),
    _t("faucet-open", "rotate", "turn the faucet on",
       "open the tap", "rotate the faucet handle open", "turn on the water"),
    _t("hammer", "tool", "hammer the nail into the wall",
       "use the hammer to drive in the nail", "knock the nail in with the hammer",
       "pick up the hammer and hit the nail"),
    _t("hand-insert", "reach", "put your hand into the hole",
       "insert the gripper into the hole", "reach down into the hole", "place the hand in the opening",
       goal=_G),
    _t("handle-press-side", "press", "press the handle down from the side",
       "push the side handle down", "press down on the handle from the side",
       "lower the handle from its side"),
    _t("handle-press", "press", "press the handle down",
       "push the handle down", "press down on the handle", "lower the handle"),
    _t("handle-pull-side", "articulated", "pull the handle up from the side",
       "lift the side handle", "raise the handle from its side", "pull up on the side handle"),
    _t("handle-pull", "articulated", "pull the handle up",
       "lift the handle", "raise the handle", "pull up on the handle"),
    _t("lever-pull", "articulated", "pull the lever up",
       "lift the lever", "raise the lever", "flip the lever upward"),
    _t("peg-insert-side", "pick-place", "insert the peg into the hole from the side",
       "push the peg sideways into the hole", "slide the peg into the side hole",
       "put the peg in the hole on the side", goal=_G),
    _t("peg-unplug-side", "articulated", "unplug the peg from the side",
       "pull the peg out sideways", "remove the peg from the side hole", "slide the peg out of its socket"),
    _t("pick-out-of-hole", "pick-place", "pick the peg out of the hole",
       "lift the peg out of the hole", "take the peg from the hole", "pull the peg up out of the hole",
       goal=_G),
    _t("pick-place", "pick-place", "pick up the puck and place it at the goal",
       "grab the puck and put it on the target", "move the puck to the goal through the air",
       "lift the puck and set it at the target", goal=_G),
    _t("pick-place-wall", "pick-place", "pick up the puck and place it at the goal behind the wall",
       "lift the puck over the wall to the target", "carry the puck past the wall to the goal",
       "put the puck on the target on the other side of the wall", goal=_G),
    _t("plate-slide-back-side", "push", "slide the plate back out of the cabinet sideways",
       "pull the plate out of the cabinet to the side", "take the plate out of the cabinet sideways",
       "get the plate from the cabinet from the side", obj=None, goal=_G),
    _t("plate-slide-back", "push", "slide the plate back out of the cabinet",
       "pull the plate out of the cabinet", "take the plate out of the cabinet",
       "get the plate from the cabinet", obj=None, goal=_G),
    _t("plate-slide-side", "push", "slide the plate into the cabinet sideways",
       "push the plate sideways into the cabinet", "slide the plate to the side target",
       "move the plate into the cabinet from the side", obj=None, goal=_G),
    _t("plate-slide", "push", "slide the plate into the cabinet",
       "push the plate into the cabinet", "slide the plate forward to the target",
       "move the plate into the cabinet", obj=None, goal=_G),
    _t("push-back", "push", "push the puck backwards to the goal",
       "slide the puck back toward the target", "push the puck toward yourself",
       "move the puck back to the goal", goal=_G),
    _t("push", "push", "push the puck to the goal",
       "slide the puck to the target", "move the puck along the table to the goal",
       "shove the puck onto the target", goal=_G),
    _t("push-wall", "push", "push the puck to the goal behind the wall",
       "slide the puck around the wall to the target", "move the puck past the wall to the goal",
       "push the puck to the target on the other side of the wall", goal=_G),
    _t("reach", "reach", "reach to the goal",
       "move the gripper to the target", "touch the goal position", "put the hand at the target",
       goal=_G),
    _t("reach-wall", "reach", "reach to the goal behind the wall",
       "move the gripper over the wall to the target", "reach past the wall to the goal",
       "put the hand at the target behind the wall", goal=_G),
    _t("shelf-place", "pick-place", "put the block on the shelf",
       "place the cube onto the shelf", "lift the block up to the shelf", "set the cube on the shelf",
       goal=_G),
    _t("soccer", "push", "kick the ball into the goal",
       "push the ball into the net", "score a goal with the ball", "shoot the ball into the goal",
       goal=_G),
    _t("stick-pull", "tool", "use the stick to pull the bottle",
       "grab the stick and drag the bottle", "hook the bottle with the stick and pull it",
       "pull the bottle toward you with the stick", goal=_G),
    _t("stick-push", "tool", "use the stick to push the bottle",
       "grab the stick and shove the bottle", "push the bottle away with the stick",
       "move the bottle forward using the stick", goal=_G),
    _t("sweep-into", "push", "sweep the cube into the hole",
       "push the block into the hole", "slide the cube into the opening", "sweep the block into the goal"),
    _t("sweep", "push", "sweep the cube off the table",
       "push the block off the edge", "slide the cube off the side of the table",
       "sweep the block off the table"),
    _t("window-close", "articulated", "close the window",
       "slide the window shut", "push the window closed", "shut the window"),
    _t("window-open", "articulated", "open the window",
       "slide the window open", "push the window open", "open up the window"),
]

TASKS: dict[str, TaskSpec] = {t.name: t for t in _ALL}

MT10 = (
    "reach-v3", "push-v3", "pick-place-v3", "door-open-v3", "drawer-open-v3",
    "drawer-close-v3", "button-press-topdown-v3", "peg-insert-side-v3", "window-open-v3", "window-close-v3",
)

TASK_PRESETS: dict[str, tuple[str, ...]] = {
    "smoke": ("drawer-open-v3", "button-press-topdown-v3"),
    "cpu-quick": ("reach-v3", "push-v3", "drawer-open-v3", "button-press-topdown-v3"),
    "mt10": MT10,
    "mt50": tuple(sorted(TASKS)),
}


class UnknownTaskError(InputError):
    pass


def get_task(name: str) -> TaskSpec:
    """Look up a task by name; accepts the name with or without the `-v3` suffix."""
    key = name if name.endswith("-v3") else f"{name}-v3"
    if key not in TASKS:
        raise UnknownTaskError(f"unknown task '{name}' (see `vlarft tasks` for the 50 names)")
    return TASKS[key]


def resolve_tasks(spec: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Turn 'reach-v3,push-v3', a preset name such as 'cpu-quick', or a list into task names."""
    if isinstance(spec, str):
        if spec in TASK_PRESETS:
            return TASK_PRESETS[spec]
        items = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        items = list(spec)
    if not items:
        raise UnknownTaskError("no tasks given")
    names = tuple(dict.fromkeys(get_task(s).name for s in items))
    return names


def task_of_instruction(instruction: str) -> str | None:
    """The task whose training instruction or paraphrase this is, if any."""
    text = instruction.strip().lower()
    for t in _ALL:
        if text in (s.lower() for s in t.all_instructions):
            return t.name
    return None
