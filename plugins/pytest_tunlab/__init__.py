"""pytest-tunlab: fixtures that give each test a real TUN device or a whole network lab."""
