"""Testing support for lgvq and its plugins: fixtures, test doubles, the plugin contract."""
