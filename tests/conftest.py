pytest_plugins = ["stockade_dev.testbed.pytest_plugin"]
