"""The stages of a study run. Each is a module with one public function that takes the ``StudyRun`` and
fills in what it measures; ``kdtune.study`` lists them in order (``RUN_STAGES``, ``REPORT_STAGES``).
A new post-sweep measurement is a new module here and one line in those lists."""
