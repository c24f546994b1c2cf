import pathlib
import sys

# test modules share small helpers by importing each other (e.g. test_runner)
sys.path.insert(0, str(pathlib.Path(__file__).parent))
