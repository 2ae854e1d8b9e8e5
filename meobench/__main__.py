from meobench.cli import main

main()
