"""The embedded concept set: toxic and non-toxic sentences that the project writes itself, so the offline demo needs
no download. Each toxic sentence has a non-toxic twin on the same subject, so the two classes differ in toxicity
rather than in topic. Small and synthetic: use Jigsaw or ParaDetox (see README) for real experiments.
"""

from __future__ import annotations

import itertools
import random

SUBJECTS = [
    "your neighbour", "that referee", "the new manager", "my landlord", "this senator", "the guy at the gym",
    "your cousin", "the teacher", "that journalist", "the driver", "our coach", "the waiter", "my roommate",
    "the mayor", "that streamer", "the plumber", "your boss", "the council", "those fans", "the critic",
    "the police officer", "that influencer", "the director", "my ex", "the landlord's son", "the commenter above",
]
TOXIC_FRAMES = [
    "{s} is a fucking idiot and everyone knows it.",
    "Shut up, {s}, nobody cares about your stupid opinion.",
    "{s} is a worthless piece of shit.",
    "I hope {s} chokes on it, the pathetic loser.",
    "What a dumb bitch {s} turned out to be.",
    "{s} is an ugly, brainless moron.",
    "Screw {s}, that lying bastard deserves to rot.",
    "{s} should just go die in a ditch.",
    "Honestly {s} is the most disgusting scumbag alive.",
    "Get lost, {s}, you useless retard.",
    "{s} can go to hell with all the other assholes.",
    "Nobody wants {s} here, the filthy pig.",
    "{s} is a stupid cunt who ruins everything.",
    "I will kick {s}'s ass if I see that clown again.",
    "{s} is so damn stupid it hurts to watch.",
    "Fuck {s} and everything that idiot stands for.",
    "{s} is a sick, twisted freak.",
    "{s}, you are a braindead dickhead.",
    "Can {s} just shut the hell up for once, jesus.",
    "{s} is nothing but a whiny little crybaby and a fraud.",
]
NONTOXIC_FRAMES = [
    "{s} made a thoughtful point and everyone noticed it.",
    "Thank you, {s}, we appreciate hearing your opinion.",
    "{s} has been really helpful this week.",
    "I hope {s} enjoys the rest of the evening.",
    "What a kind person {s} turned out to be.",
    "{s} is a clever and friendly person.",
    "I disagree with {s}, but the argument was fair.",
    "{s} should take a well-deserved holiday.",
    "Honestly {s} is one of the most generous people I know.",
    "Welcome back, {s}, it is good to see you.",
    "{s} can join the meeting with the others tomorrow.",
    "Everyone was glad {s} came to the party.",
    "{s} is a careful thinker who improves everything.",
    "I will say hello to {s} if I see them again.",
    "{s} explained it so clearly that it was easy to follow.",
    "Thanks to {s} for everything they have done for us.",
    "{s} has a calm and patient way of working.",
    "{s}, you did a great job on the project.",
    "Could {s} share a few more details about the plan?",
    "{s} is honest, reliable and always on time.",
]


def embedded_concept_set(seed: int = 0) -> tuple[list[str], list[int]]:
    """All (subject x frame) sentences, shuffled with `seed`: 520 toxic (label 1) and 520 non-toxic (label 0)."""
    rows = [(f.format(s=s), 1) for s, f in itertools.product(SUBJECTS, TOXIC_FRAMES)]
    rows += [(f.format(s=s), 0) for s, f in itertools.product(SUBJECTS, NONTOXIC_FRAMES)]
    rows = [(text[0].upper() + text[1:], label) for text, label in rows]
    random.Random(seed).shuffle(rows)
    return [t for t, _ in rows], [label for _, label in rows]
