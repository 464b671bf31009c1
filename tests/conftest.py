pytest_plugins = ["stockade.testbed.pytest_plugin"]
