"""python -m lightcap_train.data.objects --split SPLIT --seed N --count N --out DIR [--words N]"""

import argparse
import sys

from lightcap_train.data.objects import SPLITS, ObjectsError, __doc__ as DOC, write_split


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m lightcap_train.data.objects",
                                description=DOC.split("\n\n")[0])
    p.add_argument("--split", choices=list(SPLITS), required=True)
    p.add_argument("--seed", type=int, required=True)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--out", required=True, help="a new or empty folder")
    p.add_argument("--words", type=int, help="use only the N most distinct words of the table "
                   "(the same N gives the same words in every split); default: all")
    p.add_argument("--size", type=int, default=256, help="image side in pixels")
    p.add_argument("--workers", type=int, default=1, help="rendering processes (the files do not depend on it)")
    args = p.parse_args(argv)
    try:
        write_split(args.split, args.seed, args.count, args.out, args.words, args.size, workers=args.workers)
    except ObjectsError as e:
        print(f"objects: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
