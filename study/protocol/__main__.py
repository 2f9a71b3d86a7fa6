"""python -m study.protocol docs/study_file.md: regenerate the settings table."""

import sys

from study.protocol.docs import update_settings_doc

if __name__ == "__main__":
    changed = update_settings_doc(sys.argv[1] if len(sys.argv) > 1 else "docs/study_file.md")
    print("updated" if changed else "already up to date")
