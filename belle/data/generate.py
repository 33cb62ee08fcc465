"""Deterministic generator of the bundled sample data in the BELLE formats (seeded, offline).

    python -m belle.data.generate [--out DIR] [--n N]

Templates filled from small fact tables, so every answer follows from its prompt and a tiny model's loss can fall.
"""

from __future__ import annotations

import argparse
import json
import random
from collections.abc import Callable
from pathlib import Path

from belle.data.records import SAMPLES_DIR

SEED = 2023

# --- fact tables --------------------------------------------------------------------------------------------
# fmt: off
COUNTRIES = [  # (中文, English, 首都, capital)
    ("中国", "China", "北京", "Beijing"), ("日本", "Japan", "东京", "Tokyo"), ("法国", "France", "巴黎", "Paris"),
    ("英国", "the United Kingdom", "伦敦", "London"), ("德国", "Germany", "柏林", "Berlin"),
    ("意大利", "Italy", "罗马", "Rome"), ("西班牙", "Spain", "马德里", "Madrid"),
    ("俄罗斯", "Russia", "莫斯科", "Moscow"), ("美国", "the United States", "华盛顿", "Washington"),
    ("加拿大", "Canada", "渥太华", "Ottawa"), ("澳大利亚", "Australia", "堪培拉", "Canberra"),
    ("韩国", "South Korea", "首尔", "Seoul"), ("印度", "India", "新德里", "New Delhi"),
    ("埃及", "Egypt", "开罗", "Cairo"), ("巴西", "Brazil", "巴西利亚", "Brasília"),
    ("泰国", "Thailand", "曼谷", "Bangkok"), ("希腊", "Greece", "雅典", "Athens"),
    ("葡萄牙", "Portugal", "里斯本", "Lisbon"), ("荷兰", "the Netherlands", "阿姆斯特丹", "Amsterdam"),
    ("墨西哥", "Mexico", "墨西哥城", "Mexico City"),
]
CONCEPTS = [  # (中文, English, 定义, definition)
    ("光合作用", "photosynthesis", "植物利用阳光，把二氧化碳和水转化为糖和氧气的过程。",
     "the process in which plants use sunlight to turn carbon dioxide and water into sugar and oxygen."),
    ("机器学习", "machine learning", "让计算机从数据中学习规律，而不是依靠人工编写规则的方法。",
     "a way of letting computers learn patterns from data instead of following hand-written rules."),
    ("万有引力", "gravity", "任何两个有质量的物体之间相互吸引的力。",
     "the force by which any two objects with mass attract each other."),
    ("通货膨胀", "inflation", "一段时间内商品和服务的价格普遍持续上涨的现象。",
     "a general and lasting rise in the prices of goods and services over time."),
    ("蒸发", "evaporation", "液体在表面变成气体的过程，温度越高蒸发越快。",
     "the process in which a liquid turns into a gas at its surface, faster when it is warmer."),
    ("生态系统", "an ecosystem", "在一定区域内生物和它们的环境相互作用形成的整体。",
     "a community of living things together with the environment they interact with."),
    ("民主", "democracy", "由人民通过选举等方式参与国家决策的政治制度。",
     "a system of government in which the people take part in decisions, for example by voting."),
    ("互联网", "the Internet", "把世界各地的计算机网络连接在一起的全球网络。",
     "the global network that connects computer networks all over the world."),
    ("细胞", "a cell", "构成生物体的基本结构和功能单位。",
     "the basic unit of structure and function in living things."),
    ("可再生能源", "renewable energy", "来自太阳、风、水等可以不断补充的能源。",
     "energy from sources such as the sun, wind and water that are naturally replenished."),
    ("算法", "an algorithm", "为解决某个问题而设计的一系列明确的步骤。",
     "a finite list of clear steps for solving a problem."),
    ("气候变化", "climate change", "地球气候在长时间内发生的显著变化，主要与温室气体增加有关。",
     "a long-term shift in the Earth's climate, mainly linked to rising greenhouse gases."),
    ("免疫系统", "the immune system", "身体用来抵抗细菌和病毒等病原体的防御系统。",
     "the body's defence system against germs such as bacteria and viruses."),
    ("区块链", "a blockchain", "一种按时间顺序连接数据块、难以篡改的分布式记录方式。",
     "a shared record made of linked blocks of data that is very hard to change afterwards."),
]
CATEGORIES = [  # (中文类别, English category, [(中文, English)])
    ("水果", "fruits", [("苹果", "apple"), ("香蕉", "banana"), ("橙子", "orange"), ("葡萄", "grape"),
                      ("西瓜", "watermelon"), ("草莓", "strawberry"), ("桃子", "peach"), ("梨", "pear")]),
    ("颜色", "colours", [("红色", "red"), ("蓝色", "blue"), ("绿色", "green"), ("黄色", "yellow"),
                       ("紫色", "purple"), ("黑色", "black"), ("白色", "white"), ("橙色", "orange")]),
    ("动物", "animals", [("猫", "cat"), ("狗", "dog"), ("大象", "elephant"), ("老虎", "tiger"),
                       ("熊猫", "panda"), ("兔子", "rabbit"), ("猴子", "monkey"), ("长颈鹿", "giraffe")]),
    ("蔬菜", "vegetables", [("土豆", "potato"), ("西红柿", "tomato"), ("黄瓜", "cucumber"), ("胡萝卜", "carrot"),
                          ("白菜", "cabbage"), ("洋葱", "onion"), ("茄子", "eggplant"), ("菠菜", "spinach")]),
    ("运动", "sports", [("足球", "football"), ("篮球", "basketball"), ("游泳", "swimming"), ("跑步", "running"),
                      ("网球", "tennis"), ("乒乓球", "table tennis"), ("羽毛球", "badminton"), ("滑雪", "skiing")]),
    ("乐器", "musical instruments", [("钢琴", "piano"), ("小提琴", "violin"), ("吉他", "guitar"), ("鼓", "drum"),
                                   ("笛子", "flute"), ("二胡", "erhu"), ("大提琴", "cello"), ("古筝", "guzheng")]),
]
WORDS = [pair for _, _, items in CATEGORIES for pair in items] + [
    ("书", "book"), ("学校", "school"), ("老师", "teacher"), ("朋友", "friend"), ("电脑", "computer"),
    ("太阳", "sun"), ("月亮", "moon"), ("河流", "river"), ("山", "mountain"), ("城市", "city"),
]
ANTONYMS = [("大", "小"), ("高", "矮"), ("快", "慢"), ("冷", "热"), ("多", "少"), ("长", "短"), ("新", "旧"),
            ("胖", "瘦"), ("远", "近"), ("早", "晚"), ("黑", "白"), ("开心", "难过"), ("简单", "复杂"),
            ("安静", "吵闹"), ("勇敢", "胆小"), ("干净", "肮脏"), ("便宜", "昂贵"), ("成功", "失败")]
SUBJECTS = ["Tom", "Lily", "My brother", "Our teacher", "The old man", "Anna", "My neighbour", "The girl"]
VERBS = [("reads", "read", ["a book", "the newspaper", "a short story"]), ("cooks", "cooked", ["dinner", "noodles"]),
         ("cleans", "cleaned", ["the kitchen", "the windows"]), ("plays", "played", ["football", "the piano", "chess"]),
         ("writes", "wrote", ["a letter", "an email", "a poem"]), ("watches", "watched", ["a film", "the news"]),
         ("buys", "bought", ["fresh bread", "some vegetables"]), ("drinks", "drank", ["green tea", "a glass of milk"]),
         ("learns", "learned", ["ten new words", "a Chinese song"]), ("visits", "visited", ["the museum", "the park"])]
THINGS = ["那本书", "盐", "钥匙", "遥控器", "雨伞", "那支笔", "杯子", "地图"]
PLACES = [("餐厅", "restaurant"), ("酒店", "hotel"), ("咖啡馆", "café"), ("书店", "bookshop"), ("商场", "mall")]
ASPECTS = [("服务", "service"), ("环境", "atmosphere"), ("价格", "prices"), ("菜品", "food"), ("位置", "location")]
GOOD = [("非常好", "excellent"), ("让人满意", "great"), ("很不错", "wonderful")]
BAD = [("很差", "terrible"), ("让人失望", "disappointing"), ("太糟糕了", "awful")]
NAMES = ["小明", "小红", "小华", "小刚", "小丽", "小军", "小芳", "小强"]
ITEMS = [("苹果", "个"), ("铅笔", "支"), ("笔记本", "本"), ("糖果", "颗"), ("气球", "个"), ("故事书", "本")]
REFUSALS = ["我不知道。", "这个问题我无法回答。", "Sorry, I don't know.", "随便吧。"]
# fmt: on

Task = Callable[[random.Random], tuple[str, str, str]]  # → (instruction, input, output)


# --- single-turn tasks --------------------------------------------------------------------------------------
def _translate(rng: random.Random) -> tuple[str, str, str]:
    zh, en = rng.choice(WORDS)
    return rng.choice(
        [
            ("把下面的词翻译成英文。\n", zh, f"“{zh}”的英文是“{en}”。"),
            (f"“{zh}”用英语怎么说？", "", f"“{zh}”用英语说是“{en}”。"),
            ("Translate the word into Chinese.\n", en, f'The Chinese for "{en}" is “{zh}”.'),
            (f'What is "{en}" in Chinese?', "", f'"{en}" in Chinese is “{zh}”.'),
        ]
    )


def _capital(rng: random.Random) -> tuple[str, str, str]:
    zh, en, cap_zh, cap_en = rng.choice(COUNTRIES)
    return rng.choice(
        [
            (f"{zh}的首都是哪里？", "", f"{zh}的首都是{cap_zh}。"),
            (f"请告诉我{zh}的首都。", "", f"{zh}的首都是{cap_zh}。"),
            (f"What is the capital of {en}?", "", f"The capital of {en} is {cap_en}."),
        ]
    )


def _define(rng: random.Random) -> tuple[str, str, str]:
    zh, en, def_zh, def_en = rng.choice(CONCEPTS)
    return rng.choice(
        [
            (f"请解释一下什么是{zh}。", "", f"{zh}是指{def_zh}"),
            (f"用一句话说明{zh}的含义。", "", f"{zh}是指{def_zh}"),
            (f"Explain what {en} is in one sentence.", "", f"{en[0].upper()}{en[1:]} is {def_en}"),
        ]
    )


def _list(rng: random.Random) -> tuple[str, str, str]:
    zh, en, items = rng.choice(CATEGORIES)
    n = rng.randint(3, 5)
    picked = rng.sample(items, n)
    if rng.random() < 0.6:
        lines = "\n".join(f"{i}. {a}" for i, (a, _) in enumerate(picked, 1))
        return f"列出{n}种{zh}。", "", f"以下是{n}种{zh}：\n{lines}"
    lines = "\n".join(f"{i}. {b}" for i, (_, b) in enumerate(picked, 1))
    return f"List {n} {en}.", "", f"Here are {n} {en}:\n{lines}"


def _antonym(rng: random.Random) -> tuple[str, str, str]:
    word, opposite = rng.choice(ANTONYMS)
    if rng.random() < 0.5:
        word, opposite = opposite, word
    return rng.choice(
        [
            (f"“{word}”的反义词是什么？", "", f"“{word}”的反义词是“{opposite}”。"),
            ("写出下面这个词的反义词。\n", word, f"“{word}”的反义词是“{opposite}”。"),
        ]
    )


def _past_tense(rng: random.Random) -> tuple[str, str, str]:
    subject = rng.choice(SUBJECTS)
    present, past, objects = rng.choice(VERBS)
    thing = rng.choice(objects)
    return (
        "Rewrite the sentence in the past tense.\n",
        f"{subject} {present} {thing} every day.",
        f"{subject} {past} {thing} yesterday.",
    )


def _sort(rng: random.Random) -> tuple[str, str, str]:
    numbers = rng.sample(range(1, 100), rng.randint(4, 7))
    shown, ordered = ", ".join(map(str, numbers)), ", ".join(map(str, sorted(numbers)))
    return rng.choice(
        [
            ("将下面的数字从小到大排序。\n", shown, f"从小到大排序后是：{ordered}。"),
            ("Sort these numbers in ascending order.\n", shown, f"In ascending order: {ordered}."),
        ]
    )


def _polite(rng: random.Random) -> tuple[str, str, str]:
    thing = rng.choice(THINGS)
    return "把下面的句子改写得更礼貌一些。\n", f"把{thing}给我。", f"请问您可以把{thing}递给我吗？谢谢！"


def _sentiment(rng: random.Random) -> tuple[str, str, str]:
    (place, place_en), (aspect, aspect_en) = rng.choice(PLACES), rng.choice(ASPECTS)
    positive = rng.random() < 0.5
    adj, adj_en = rng.choice(GOOD if positive else BAD)
    if rng.random() < 0.6:
        label = "正面" if positive else "负面"
        return (
            "判断下面这条评论的情感是正面还是负面。\n",
            f"这家{place}的{aspect}{adj}。",
            f"这条评论的情感是{label}的，因为评论说{aspect}{adj}。",
        )
    label = "positive" if positive else "negative"
    return (
        "Is the sentiment of this review positive or negative?\n",
        f"The {aspect_en} at this {place_en} was {adj_en}.",
        f"The sentiment is {label}: the review calls the {aspect_en} {adj_en}.",
    )


def _compare(rng: random.Random) -> tuple[str, str, str]:
    a, b = rng.sample(range(1, 1000), 2)
    return rng.choice(
        [
            (f"{a}和{b}哪个数更大？", "", f"{max(a, b)}更大，因为{max(a, b)}比{min(a, b)}多{abs(a - b)}。"),
            (f"Which is larger, {a} or {b}?", "", f"{max(a, b)} is larger: it is {abs(a - b)} more than {min(a, b)}."),
        ]
    )


TASKS: list[Task] = [_translate, _capital, _define, _list, _antonym, _past_tense, _sort, _polite, _sentiment, _compare]


def _single(rng: random.Random) -> tuple[str, str, str]:
    return rng.choice(TASKS)(rng)


# --- multi-turn dialogues: [(human, assistant), …] ------------------------------------------------------------
def _capital_followup(rng: random.Random) -> list[tuple[str, str]]:
    picked = rng.sample(COUNTRIES, rng.randint(2, 3))
    turns = [(f"{picked[0][0]}的首都是哪里？", f"{picked[0][0]}的首都是{picked[0][2]}。")]
    return turns + [(f"那{zh}呢？", f"{zh}的首都是{cap}。") for zh, _, cap, _ in picked[1:]]


def _concept_followup(rng: random.Random) -> list[tuple[str, str]]:
    zh, en, def_zh, _ = rng.choice(CONCEPTS)
    return [(f"请解释一下什么是{zh}。", f"{zh}是指{def_zh}"), ("它的英文怎么说？", f"{zh}的英文是“{en}”。")]


def _list_followup(rng: random.Random) -> list[tuple[str, str]]:
    zh, _, items = rng.choice(CATEGORIES)
    picked = rng.sample(items, 3)
    listed = "\n".join(f"{i}. {a}" for i, (a, _) in enumerate(picked, 1))
    translated = "\n".join(f"{i}. {a}：{b}" for i, (a, b) in enumerate(picked, 1))
    return [(f"列出3种{zh}。", f"以下是3种{zh}：\n{listed}"), ("把它们翻译成英文。", f"翻译如下：\n{translated}")]


def _chain(rng: random.Random) -> list[tuple[str, str]]:
    return [(instruction + extra, output) for instruction, extra, output in (_single(rng) for _ in range(2))]


DIALOGUES = [_capital_followup, _concept_followup, _list_followup, _chain]


def _dialogue(rng: random.Random) -> list[tuple[str, str]]:
    return rng.choice(DIALOGUES)(rng)


# --- school math (school_math_0.25M style): every equation line is checkable ---------------------------------
def _math(rng: random.Random) -> tuple[str, str]:
    name, (item, unit) = rng.choice(NAMES), rng.choice(ITEMS)
    kind = rng.randrange(7)
    if kind == 0:
        a, b = rng.randint(3, 60), rng.randint(2, 40)
        q = f"{name}有{a}{unit}{item}，又买了{b}{unit}，现在一共有多少{unit}{item}？"
        steps, answer = f"原来有{a}{unit}，又买了{b}{unit}，合起来是：\n{a} + {b} = {a + b}（{unit}）", a + b
    elif kind == 1:
        a = rng.randint(20, 90)
        b = rng.randint(1, a - 1)
        q = f"书架上有{a}本书，同学们借走了{b}本，书架上还剩多少本书？"
        steps, answer = f"用原有的数量减去借走的数量：\n{a} - {b} = {a - b}（本）", a - b
    elif kind == 2:
        price, n = rng.randint(2, 15), rng.randint(2, 12)
        q = f"每{unit}{item}{price}元，{name}买了{n}{unit}，一共要付多少元？"
        steps, answer = f"总价 = 单价 × 数量：\n{price} × {n} = {price * n}（元）", price * n
    elif kind == 3:
        k, n = rng.randint(2, 12), rng.randint(2, 9)
        q = f"{k * n}颗糖果平均分给{n}个小朋友，每个小朋友分到几颗？"
        steps, answer = f"平均分用除法：\n{k * n} ÷ {n} = {k}（颗）", k
    elif kind == 4:
        price, n = rng.randint(3, 9), rng.randint(2, 6)
        paid = 50 if price * n < 50 else 100
        q = f"{name}买了{n}本笔记本，每本{price}元，付给售货员{paid}元，应该找回多少元？"
        steps = (
            f"先算总价：\n{n} × {price} = {price * n}\n再算找回的钱：\n{paid} - {price * n} = {paid - price * n}（元）"
        )
        answer = paid - price * n
    elif kind == 5:
        a, b = rng.randint(3, 30), rng.randint(2, 20)
        q = f"一块长方形菜地长{a}米，宽{b}米，它的周长是多少米？"
        steps = f"长方形的周长 =（长 + 宽）× 2：\n{a} + {b} = {a + b}\n{a + b} × 2 = {(a + b) * 2}（米）"
        answer = (a + b) * 2
    else:
        spent1, spent2, left = rng.randint(2, 20), rng.randint(2, 20), rng.randint(1, 30)
        total = spent1 + spent2 + left
        q = f"{name}买了一支钢笔，花了{spent1}元，又买了一本书，花了{spent2}元，现在还剩{left}元，{name}原来有多少元？"
        steps = (
            f"设{name}原来有X元，根据题意得：\nX - {spent1} - {spent2} = {left}\n所以：\n"
            f"{left} + {spent1} + {spent2} = {total}\n因此，{name}原来有{total}元。"
        )
        answer = total
    return f"题目：{q}", f"{steps}\n答案：{answer}"


# --- pretraining text -----------------------------------------------------------------------------------------
def _fact(rng: random.Random) -> str:
    kind = rng.randrange(5)
    if kind == 0:
        zh, en, cap_zh, cap_en = rng.choice(COUNTRIES)
        return rng.choice([f"{zh}的首都是{cap_zh}。", f"The capital of {en} is {cap_en}."])
    if kind == 1:
        zh, en, def_zh, def_en = rng.choice(CONCEPTS)
        return rng.choice([f"{zh}是指{def_zh}", f"{en[0].upper()}{en[1:]} is {def_en}"])
    if kind == 2:
        zh, en = rng.choice(WORDS)
        return rng.choice([f"“{zh}”的英文是“{en}”。", f'The Chinese for "{en}" is “{zh}”.'])
    if kind == 3:
        present, _, objects = rng.choice(VERBS)
        return f"{rng.choice(SUBJECTS)} {present} {rng.choice(objects)} every day."
    word, opposite = rng.choice(ANTONYMS)
    return f"“{word}”和“{opposite}”是一对反义词。"


def _text(rng: random.Random) -> str:
    facts = [_fact(rng) for _ in range(rng.randint(4, 9))]
    return "".join(fact if fact.endswith("。") else fact + " " for fact in facts).rstrip()


# --- records ------------------------------------------------------------------------------------------------
def _as_instruction(turns: list[tuple[str, str]]) -> dict:
    """A dialogue in multiturn_chat_0.8M form: the history inside `instruction`, the last answer as `output`."""
    history = "".join(f"Human:{human}\nAssistant:{answer}\n" for human, answer in turns[:-1])
    return {"instruction": f"{history}Human:{turns[-1][0]}\nAssistant:", "input": "", "output": turns[-1][1]}


def generate_instruction_records(n: int, seed: int = SEED) -> list[dict]:
    """`n` {"instruction","input","output"} records; about one in five holds a multi-turn history."""
    rng = random.Random(f"instruction-{seed}")
    records = []
    for _ in range(n):
        if rng.random() < 0.2:
            records.append(_as_instruction(_dialogue(rng)))
        else:
            instruction, extra, output = _single(rng)
            records.append({"instruction": instruction, "input": extra, "output": output})
    return records


def _conversations(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"conversations-{seed}")
    records = []
    for i in range(n):
        turns = _dialogue(rng)
        if rng.random() < 0.5:
            instruction, extra, output = _single(rng)
            turns.append((instruction + extra, output))
        values = [
            {"from": role, "value": v} for pair in turns for role, v in zip(("human", "assistant"), pair, strict=True)
        ]
        records.append({"id": f"conv-{i:05d}", "conversations": values})
    return records


def _math_records(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"math-{seed}")
    return [{"instruction": q, "input": "", "output": a} for q, a in (_math(rng) for _ in range(n))]


def _pretrain(n: int, seed: int) -> list[dict]:
    rng = random.Random(f"pretrain-{seed}")
    return [{"text": _text(rng)} for _ in range(n)]


def _preference_triples(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(prompt, good answer, bad answer): the bad one refuses or answers another question."""
    rng = random.Random(f"preference-{seed}")
    triples = []
    for _ in range(n):
        instruction, extra, good = _single(rng)
        bad = rng.choice(REFUSALS) if rng.random() < 0.5 else _single(rng)[2]
        if bad == good:
            bad = REFUSALS[0]
        triples.append((f"Human: \n{instruction + extra}\n\nAssistant: \n", good, bad))
    return triples


def build_all(n: int = 3000, seed: int = SEED) -> dict[str, list[dict]]:
    """Every sample file's records, keyed by file name; sizes scale with `n` instruction records."""
    preference = _preference_triples(n // 10, seed)
    dpo = _preference_triples(n // 10, seed + 1)
    return {
        "instruction.jsonl": generate_instruction_records(n, seed),
        "conversations.jsonl": _conversations(n // 5, seed),
        "math.jsonl": _math_records(n // 5, seed),
        "pretrain.jsonl": _pretrain(n // 5, seed),
        "preference.jsonl": [{"chosen": p + good, "rejected": p + bad} for p, good, bad in preference],
        "dpo.jsonl": [{"prompt": p, "chosen": good, "rejected": bad} for p, good, bad in dpo],
        "prompts.jsonl": [{"text": p} for p, _, _ in _preference_triples(n // 10, seed + 2)],
    }


def write_samples(out: Path = SAMPLES_DIR, n: int = 3000, seed: int = SEED) -> list[Path]:
    """Write every sample file as JSON lines under `out`; returns the paths."""
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, records in build_all(n, seed).items():
        path = out / name
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        paths.append(path)
    return paths


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=SAMPLES_DIR, help="output folder (default: the bundled samples)")
    parser.add_argument("--n", type=int, default=3000, help="instruction records; other files scale with it")
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    for path in write_samples(args.out, args.n, args.seed):
        print(f"{path}  {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    main()
