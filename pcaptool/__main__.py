from pcaptool.cli import main

main()
